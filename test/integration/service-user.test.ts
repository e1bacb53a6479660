/**
 * service.user and service.success-exit-status end to end (issue 14). A scratch root with a
 * static Lua and a probe script that answers with the ids it runs as (read from
 * /proc/self/status) and then exits 1, as many inetd servers do. /etc/passwd and /etc/group come
 * from the config's files; nspawn's --user would need getent, NSS and a home directory in the
 * pruned root, which has none of them. The build must trace, self-check, verify and write units
 * with the payload really running as the user; without success-exit-status it must stop with
 * the crash message and a hint naming the field; an unknown user is a config error with its line.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { build } from '../../src/pipeline.js';
import type { PruneReport } from '../../src/prune/report.js';
import { RUN_AS_PATH } from '../../src/service-user/run-as-elf.js';
import { ACCEPT_PATH } from '../../src/accept/accept-elf.js';
import { readRunAsFromImage } from '../../src/stages/service-user.js';
import { run } from '../../src/tools/exec.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { GOPHERMOON_CONFIG } from '../support/gopher.js';

const USER = { name: 'prober', uid: 4321, gid: 4322, home: '/home/prober' };
/** A second group listing the user: a supplementary group, as initgroups() would add. */
const EXTRA_GROUP = 4323;
const PASSWD = `root:x:0:0:root:/root:/bin/sh\n${USER.name}:x:${USER.uid}:${USER.gid}:probe user:${USER.home}:/bin/false\n`;
const GROUP = `root:x:0:\n${USER.name}:x:${USER.gid}:\nreaders:x:${EXTRA_GROUP}:daemon,${USER.name}\nother:x:4999:daemon\n`;

const WHOAMI = `local sel = (io.read('l') or ''):gsub('\\r$', '')
local f = assert(io.open('/proc/self/status'))
local st = f:read('a')
f:close()
local function ids(field)
  local t = {}
  for n in (st:match('\\n' .. field .. ':([^\\n]*)') or ''):gmatch('%d+') do t[#t + 1] = n end
  return table.concat(t, ' ')
end
io.write('selector ', sel, '\\r\\n')
io.write('uid ', ids('Uid'), '\\r\\n', 'gid ', ids('Gid'), '\\r\\n', 'groups ', ids('Groups'), '\\r\\n')
io.write('home ', os.getenv('HOME') or '-', '\\r\\n', 'user ', os.getenv('USER') or '-', '\\r\\n')
io.write('.\\r\\n')
io.stdout:flush()
-- An inetd server that ends every connection with exit code 1.
os.exit(1)
`;

/** What the script must print when the ids were dropped like systemd's User= does. */
function expectedResponse(selector: string): string {
  const four = (n: number) => `${n} ${n} ${n} ${n}`;
  const groups = [USER.gid, EXTRA_GROUP].sort((a, b) => a - b).join(' ');
  return (
    `selector ${selector}\r\nuid ${four(USER.uid)}\r\ngid ${four(USER.gid)}\r\ngroups ${groups}\r\n` +
    `home ${USER.home}\r\nuser ${USER.name}\r\n.\r\n`
  );
}

/** The gophermoon example's lua: block (version, sha256, urls), so the cached Lua is reused. */
function luaBlock(): string {
  const text = readFileSync(GOPHERMOON_CONFIG, 'utf8');
  const m = /^lua:\n(?: {2}.*\n)+/m.exec(text);
  if (!m) throw new Error('test bug: no lua: block in the gophermoon example');
  return m[0];
}

function configText(service: string): string {
  return (
    `name: whoami\nbase:\n  type: scratch\n${luaBlock()}` +
    'files:\n' +
    '  - { src: whoami.lua, dst: /bin/whoami, mode: "0644" }\n' +
    '  - { src: passwd, dst: /etc/passwd, mode: "0644" }\n' +
    '  - { src: group, dst: /etc/group, mode: "0644" }\n' +
    `service:\n  command: [/bin/lua, /bin/whoami]\n  inetd: true\n${service}` +
    'probes:\n  - { name: ids, type: gopher, selector: "ids", fixture: ids.gopher }\n'
  );
}

describe('service.user and success-exit-status on a pruned scratch root', () => {
  let tmp: string;
  let store: Awaited<ReturnType<typeof seededBuildCache>>;

  async function buildWith(service: string, verify: boolean): Promise<BuildResult> {
    const configFile = path.join(tmp, 'lhc.yml');
    writeFileSync(configFile, configText(service));
    return build(await loadConfig(configFile), {
      outDir: path.join(tmp, 'out'),
      workDir: path.join(tmp, 'work'),
      force: true,
      verify,
      logger: memoryLogger(),
      store: store.store,
      cacheDir: store.cacheDir,
      env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
    });
  }

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-service-user-'));
    writeFileSync(path.join(tmp, 'whoami.lua'), WHOAMI);
    writeFileSync(path.join(tmp, 'passwd'), PASSWD);
    writeFileSync(path.join(tmp, 'group'), GROUP);
    writeFileSync(path.join(tmp, 'ids.gopher'), expectedResponse('ids'));
    execFileSync('git', ['init', '-q', tmp]);
    store = await seededBuildCache();
  }, 600_000);

  afterAll(async () => {
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  describe('with user: prober and success-exit-status: [1]', () => {
    let r: BuildResult;
    beforeAll(async () => {
      r = await buildWith(`  user: ${USER.name}\n  success-exit-status: [1]\n`, true);
    }, 1_800_000);

    it('verifies: the probe answered with the dropped ids, every hardening row passed', () => {
      // The probe over a socket, and the same request from curl.
      expect(r.verify!.probes.map((p) => p.name)).toContain('ids');
      expect(r.verify!.probes.filter((p) => !p.ok)).toEqual([]);
      expect(r.verify!.hardening.filter((h) => !h.ok)).toEqual([]);
      expect(r.verify!.ok).toBe(true);
    });

    it("reads the payload's ids in the hardening rows (not lhc-run-as, not a getent child)", () => {
      const row = r.verify!.hardening.find((h) => h.name.startsWith('payload runs as'));
      expect(row).toBeDefined();
      expect(row!.name).toBe(`payload runs as ${USER.name} (uid ${USER.uid}, gid ${USER.gid})`);
      expect(row!.detail).toContain(`Uid: ${USER.uid} ${USER.uid} ${USER.uid} ${USER.uid}`);
      expect(row!.ok).toBe(true);
    });

    it('keeps lhc-run-as as service-user and needs no passwd, group or home in the image', () => {
      const report = JSON.parse(readFileSync(r.traceReport, 'utf8')) as PruneReport;
      const kept = new Map(report.kept.list.map((k) => [k.path, k.why]));
      expect(kept.get(RUN_AS_PATH)).toEqual(['service-user']);
      for (const p of ['/etc/passwd', '/etc/group', USER.home]) expect(kept.has(p)).toBe(false);
    });

    it('carries the ids in the packed image, where the board verify reads them', async () => {
      const config = await loadConfig(path.join(tmp, 'lhc.yml'));
      expect(await readRunAsFromImage(config, r.image)).toEqual({
        name: USER.name,
        uid: USER.uid,
        gid: USER.gid,
        groups: [USER.gid, EXTRA_GROUP],
        home: USER.home,
      });
    });

    it("writes units that start the command through lhc-run-as, behind the warm container's lhc-accept", () => {
      const unit = readFileSync(path.join(r.bundleDir, 'whoami@.service'), 'utf8');
      // lhc-accept reaps the connection's exit code 1 and exits 0: nothing for systemd to accept.
      expect(unit).not.toMatch(/^SuccessExitStatus=/m);
      expect(unit).toMatch(/^Restart=on-success$/m);
      const exec = /^ExecStart=(.*)$/m.exec(unit)![1]!;
      expect(exec).not.toContain('--user=');
      expect(exec).toMatch(
        new RegExp(`-- ${ACCEPT_PATH} \\d+ 0 ${RUN_AS_PATH} /bin/lua /bin/whoami`),
      );
      expect(exec).toContain(`--setenv=HOME=${USER.home}`);
      const oci = JSON.parse(readFileSync(path.join(r.bundleDir, 'oci/config.json'), 'utf8')) as {
        process: { user: { uid: number; gid: number; additionalGids: number[] } };
      };
      expect(oci.process.user).toEqual({
        uid: USER.uid,
        gid: USER.gid,
        additionalGids: [USER.gid, EXTRA_GROUP],
      });
    });
  });

  it('without success-exit-status, stops at the first probe and names the field', async () => {
    const e = await buildWith(`  user: ${USER.name}\n`, false).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(e?.message).toContain("exited with code 1 while answering probe 'ids'");
    expect(e?.message).toContain('service.success-exit-status');
  }, 1_800_000);

  it('an unknown user is a config error naming service.user and its line', async () => {
    const e = await buildWith(`  user: ghost\n  success-exit-status: [1]\n`, false).then(
      () => undefined,
      (err: unknown) => err as Error & { exitCode?: number },
    );
    const line = configText('  user: ghost\n').split('\n').indexOf('  user: ghost') + 1;
    expect(e?.message).toBe(
      `service.user: "ghost" is not a user in the root's /etc/passwd (lhc.yml:${line})`,
    );
    expect(e?.exitCode).toBe(2);
  }, 1_800_000);
});
