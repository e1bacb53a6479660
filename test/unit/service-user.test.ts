import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';
import { parseElf, staticProblems } from '../../src/elf/elf.js';
import { parseGroup, parsePasswd, resolveUser } from '../../src/service-user/passwd.js';
import { readRunAsElf, RUN_AS_PATH, runAsElf } from '../../src/service-user/run-as-elf.js';
import { installRunAs, readRunAs } from '../../src/stages/service-user.js';
import { stageContext } from '../../src/core/stage.js';
import { nspawnArgv } from '../../src/tools/nspawn.js';
import { checkUser, insideId } from '../../src/verify/hardening.js';

const PASSWD = [
  '# a comment',
  'root:x:0:0:root:/root:/bin/sh',
  'www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin',
  'broken:x:notanumber:1::/:/bin/sh',
  '+nisuser::::::',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  'short:x:5:5',
  '',
].join('\n');
const GROUP = [
  'root:x:0:',
  'www-data:x:33:',
  'adm:x:4:syslog,www-data',
  'nogroup:x:65534:',
  'web:x:1000:www-data',
  'bad:x:x:www-data',
].join('\n');

describe('passwd and group parsing', () => {
  it('reads the well-formed lines and skips comments, NIS lines and bad ids', () => {
    expect(parsePasswd(PASSWD)).toEqual([
      { name: 'root', uid: 0, gid: 0, home: '/root' },
      { name: 'www-data', uid: 33, gid: 33, home: '/var/www' },
      { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent' },
    ]);
    expect(parseGroup(GROUP).map((g) => [g.name, g.gid, g.members])).toEqual([
      ['root', 0, []],
      ['www-data', 33, []],
      ['adm', 4, ['syslog', 'www-data']],
      ['nogroup', 65534, []],
      ['web', 1000, ['www-data']],
    ]);
  });

  it('resolves a name like User=: primary gid first, then the groups listing the user', () => {
    expect(resolveUser('www-data', PASSWD, GROUP)).toEqual({
      runAs: { name: 'www-data', uid: 33, gid: 33, groups: [33, 4, 1000], home: '/var/www' },
    });
  });

  it('resolves a uid through passwd, or to gid = uid and HOME=/ where passwd has none', () => {
    expect(resolveUser(65534, PASSWD, GROUP)).toEqual({
      runAs: { name: 'nobody', uid: 65534, gid: 65534, groups: [65534], home: '/nonexistent' },
    });
    expect(resolveUser('4000', undefined, undefined)).toEqual({
      runAs: { name: '4000', uid: 4000, gid: 4000, groups: [4000], home: '/' },
    });
  });

  it('says why a name cannot be resolved', () => {
    expect(resolveUser('ghost', PASSWD, GROUP)).toEqual({
      problem: `"ghost" is not a user in the root's /etc/passwd`,
    });
    expect(resolveUser('nobody', undefined, undefined)).toEqual({
      problem: expect.stringContaining('the root has no /etc/passwd') as string,
    });
  });
});

describe('lhc-run-as', () => {
  const r = { name: 'www-data', uid: 33, gid: 33, groups: [33, 4], home: '/var/www' };

  it.each(['aarch64', 'x86_64'] as const)('is a static %s ELF carrying the ids', (arch) => {
    const bytes = runAsElf(arch, r);
    expect(staticProblems(parseElf(bytes), arch)).toEqual([]);
    expect(parseElf(bytes)!.type).toBe('EXEC');
    expect(readRunAsElf(bytes)).toEqual(r);
    expect(bytes.length).toBeLessThan(1024);
  });

  it('is the same bytes for the same ids (reproducible images)', () => {
    expect(runAsElf('aarch64', r).equals(runAsElf('aarch64', { ...r }))).toBe(true);
    expect(runAsElf('aarch64', r).equals(runAsElf('aarch64', { ...r, uid: 34 }))).toBe(false);
  });

  it('reads nothing from a file that is not one', () => {
    expect(readRunAsElf(Buffer.from('#!/bin/sh\n'))).toBeUndefined();
  });
});

describe('nspawn argv with service.user', () => {
  const base = { root: '/r', command: ['/bin/lua', '/bin/x'] };
  it('starts the command through lhc-run-as with HOME, USER and LOGNAME, never --user=', () => {
    const argv = nspawnArgv({
      ...base,
      runAs: { name: 'www-data', uid: 33, gid: 33, groups: [33], home: '/var/www' },
      env: { USER: 'override' },
    });
    expect(argv.some((a) => a.startsWith('--user'))).toBe(false);
    expect(argv.slice(argv.indexOf('--') + 1)).toEqual([RUN_AS_PATH, '/bin/lua', '/bin/x']);
    expect(argv).toContain('--setenv=HOME=/var/www');
    expect(argv).toContain('--setenv=LOGNAME=www-data');
    // The service's own env wins, as Environment= does over User=.
    expect(argv).toContain('--setenv=USER=override');
    expect(argv).not.toContain('--setenv=USER=www-data');
  });

  it('runs the command itself for root', () => {
    const argv = nspawnArgv(base);
    expect(argv.slice(argv.indexOf('--') + 1)).toEqual(['/bin/lua', '/bin/x']);
    expect(argv.some((a) => a.startsWith('--setenv=HOME'))).toBe(false);
  });
});

describe('the payload-user hardening row', () => {
  const map = '         0 1879048192      65536\n';
  const want = { name: 'www-data', uid: 33, gid: 33, groups: [33, 4] };
  const host = (n: number) => 1879048192 + n;
  const status = (uid: number, gid: number, groups: number[]) =>
    `Name:\tlua\nUid:\t${[uid, uid, uid, uid].map(host).join('\t')}\nGid:\t${[gid, gid, gid, gid].map(host).join('\t')}\nGroups:\t${groups.map(host).join(' ')} \n`;

  it('translates host ids through the namespace maps', () => {
    expect(insideId(map, host(33))).toBe(33);
    expect(insideId(map, 5)).toBeUndefined();
    expect(insideId('0 0 4294967295\n', 33)).toBe(33);
  });

  it('passes for the wanted ids and fails for root or missing groups', () => {
    expect(checkUser(status(33, 33, [4, 33]), map, map, want).ok).toBe(true);
    const asRoot = checkUser(status(0, 0, []), map, map, want);
    expect(asRoot.ok).toBe(false);
    expect(asRoot.detail).toContain('Uid: 0 0 0 0');
    expect(checkUser(status(33, 33, [33]), map, map, want).ok).toBe(false);
  });
});

describe('service.user in the config', () => {
  const text = (user: string) =>
    `name: x\nservice:\n  command: [/bin/x]\n  inetd: true\n  user: ${user}\nprobes:\n  - { name: a, type: gopher, fixture: a }\n`;

  it('takes a name or a uid', () => {
    expect(parseConfig(text('www-data')).service.user).toBe('www-data');
    expect(parseConfig(text('65534')).service.user).toBe(65534);
  });

  it.each([
    ['"bad name"', 'expected a user name'],
    ['-1', 'Too small'],
    ['"a:b"', 'expected a user name'],
  ])('refuses %s with the field and line', (user, message) => {
    expect(() => parseConfig(text(user))).toThrow(ConfigError);
    expect(() => parseConfig(text(user))).toThrow(
      new RegExp(`^service\\.user: .*${message}.*\\(lhc\\.yml:5\\)$`),
    );
  });
});

describe('installing lhc-run-as into a root', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-run-as-unit-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function setup(user: string, withPasswd: boolean) {
    const root = path.join(dir, `root-${user}-${withPasswd}`);
    await rm(root, { recursive: true, force: true });
    const { mkdir } = await import('node:fs/promises');
    await mkdir(path.join(root, 'etc'), { recursive: true });
    if (withPasswd) {
      await writeFile(path.join(root, 'etc/passwd'), PASSWD);
      await writeFile(path.join(root, 'etc/group'), GROUP);
    }
    const file = path.join(dir, `lhc-${user}.yml`);
    await writeFile(
      file,
      `name: x\nservice:\n  command: [/bin/x]\n  inetd: true\n  user: ${user}\nprobes:\n  - { name: a, type: gopher, fixture: a }\n`,
    );
    return { root, config: await loadConfig(file) };
  }

  it('installs the helper for a known user and reads the ids back from the root', async () => {
    const { root, config } = await setup('www-data', true);
    const r = await installRunAs(stageContext({ logger: memoryLogger(), workDir: dir }), {
      config,
      root,
    });
    expect(r).toEqual({
      name: 'www-data',
      uid: 33,
      gid: 33,
      groups: [33, 4, 1000],
      home: '/var/www',
    });
    expect(await readRunAs(config, root)).toEqual(r);
  });

  it('an unknown user is a config error naming service.user and its line', async () => {
    const { root, config } = await setup('ghost', true);
    const e = await installRunAs(stageContext({ logger: memoryLogger(), workDir: dir }), {
      config,
      root,
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).toBe(
      `service.user: "ghost" is not a user in the root's /etc/passwd (lhc-ghost.yml:5)`,
    );
  });

  it('an image without the helper cannot be verified for a non-root user', async () => {
    const { root, config } = await setup('nobody', false);
    await expect(readRunAs(config, root)).rejects.toThrow(/has no \/usr\/lib\/lhc\/lhc-run-as/);
  });
});
