/**
 * verify for real: the gophermoon example packed by the real stages, booted read-only through
 * systemd-socket-activate + systemd-nspawn under QEMU, every probe compared byte for byte, the
 * hardening read from the live container, a load of 200 requests at concurrency 8, and after
 * success, failure, timeout and SIGTERM nothing of ours left in /proc/mounts, `losetup -a` or
 * the process table.
 */
import { spawn } from 'node:child_process';
import { cpSync, lstatSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import type { GopherProbe } from '../../src/config/schema.js';
import { memoryLogger, type Logger } from '../../src/core/logger.js';
import { stageContext, type StageContext } from '../../src/core/stage.js';
import { start } from '../../src/tools/exec.js';
import { nspawnArgv } from '../../src/tools/nspawn.js';
import { writeDataTemplate } from '../../src/stages/data-template.js';
import { packImage } from '../../src/stages/pack.js';
import { makeScratchRoot } from '../../src/stages/root.js';
import type { VerifyOutcome } from '../../src/build-result.js';
import { verifyImage } from '../../src/stages/verify.js';
import { checkNoInterpreters, inspectProcess, listImage } from '../../src/verify/hardening.js';
import { findPayloads } from '../../src/harness/proc.js';
import { unpackTemplate } from '../../src/harness/data.js';
import { formatVerifyReport } from '../../src/verify/report.js';
import { debianDeb, extractDeb } from '../support/debian-inputs.js';
import { REPO } from '../support/gopher.js';
import {
  packedGophermoon,
  requireTools,
  snapshot,
  sweepLeftovers,
  type HostSnapshot,
  type PackedImage,
} from '../support/verify-image.js';

let tmp: string;
let packed: PackedImage;
let before: HostSnapshot;
const savedTmpdir = process.env.TMPDIR;

/** verify's work dirs go under our own dir, so leftovers are ours alone (other helpers run containers too). */
function ourTmp(): string {
  return path.join(tmp, 'run');
}

async function expectNothingLeft(): Promise<void> {
  // Give killed processes a moment to be reaped before looking.
  let now = await snapshot(tmp);
  for (let i = 0; i < 20 && JSON.stringify(now) !== JSON.stringify(before); i++) {
    await new Promise((r) => setTimeout(r, 250));
    now = await snapshot(tmp);
  }
  // Sweep before asserting, so one test's leftovers cannot fail the next one.
  if (JSON.stringify(now) !== JSON.stringify(before)) await sweepLeftovers(tmp);
  expect(now).toEqual(before);
}

/** verify's mount points go under ourTmp() (its work dir's verify/). */
function verifyCtx(logger: Logger): StageContext {
  return stageContext({ logger, workDir: ourTmp() });
}

function withProbes(config: LhcConfig, probes: LhcConfig['probes']): LhcConfig {
  return { ...config, probes };
}

function probe(config: LhcConfig, name: string): GopherProbe {
  const p = config.probes.find((x) => x.name === name);
  if (!p || p.type !== 'gopher') throw new Error(`gophermoon has no gopher probe ${name}`);
  return p;
}

beforeAll(async () => {
  await requireTools();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-verify-test-'));
  await mkdir(ourTmp());
  process.env.TMPDIR = ourTmp();
  packed = await packedGophermoon(tmp);
  before = await snapshot(tmp);
  expect(before).toEqual({ mounts: [], loops: [], processes: [] });
});

afterAll(async () => {
  process.env.TMPDIR = savedTmpdir;
  if (savedTmpdir === undefined) delete process.env.TMPDIR;
  if (!tmp) return;
  // Only after a failed test is there anything to sweep; never rm -rf across a live mount.
  await sweepLeftovers(tmp);
  await rm(tmp, { recursive: true, force: true });
});

describe('verify on the packed gophermoon image', () => {
  let report: VerifyOutcome;
  const logger = memoryLogger();

  beforeAll(async () => {
    report = await verifyImage(verifyCtx(logger), {
      config: packed.config,
      image: packed.image,
      dataTemplate: packed.dataTemplate,
      requests: 200,
      concurrency: 8,
    });
  });

  it('passes, with every probe equal to its fixture and the real client (curl) too', () => {
    const failed = report.probes.filter((p) => !p.ok);
    expect(failed, formatVerifyReport(report).join('\n')).toEqual([]);
    expect(report.probes.map((p) => p.name)).toEqual([
      ...packed.config.probes.map((p) => p.name),
      'root-empty (curl)',
    ]);
    expect(report.curl).toMatchObject({
      ok: true,
      bytes: readFileSync(packed.config.probes[0]!.fixture!).length,
    });
    expect(report.ok, formatVerifyReport(report).join('\n')).toBe(true);
  });

  it('shows every hardening row green', () => {
    expect(report.hardening.map((h) => h.name)).toEqual([
      'root mounted read-only',
      '/data noexec,nosuid,nodev',
      '/tmp absent or noexec,nosuid,nodev',
      '/run absent or noexec,nosuid,nodev',
      '/dev/shm absent or noexec,nosuid,nodev',
      '/dev nosuid, noexec or capped at 4 MiB',
      'no network interface but lo',
      'NoNewPrivs set',
      'CAP_NET_ADMIN, CAP_SYS_ADMIN not in bounding set',
      'uid 0 inside is not 0 outside',
      'open files ≤ 1024, processes ≤ 64',
      'no shell or interpreter but the service',
    ]);
    expect(report.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(report.hardening[0]!.detail).toMatch(/^squashfs \/dev\/loop\d+ \(ro,/);
  });

  it('answers 200 requests at concurrency 8 with 0 failures', () => {
    expect(report.load).toMatchObject({ requests: 200, concurrency: 8, failures: 0 });
    expect(report.load!.p50ms).toBeGreaterThan(0);
    expect(report.load!.p50ms).toBeLessThanOrEqual(report.load!.p95ms);
    expect(report.load!.p95ms).toBeLessThanOrEqual(report.load!.p99ms);
  });

  it('leaves no mount, loop device or process behind', async () => {
    await expectNothingLeft();
  });
});

describe('a fixture changed by one byte', () => {
  it('fails with a readable diff that names the first differing byte, and cleans up', async () => {
    const root = probe(packed.config, 'root-empty');
    const original = readFileSync(root.fixture);
    // Turn the first TAB into a space: invisible in a plain diff, the classic Gopher menu bug.
    const at = original.indexOf(0x09);
    const changed = Buffer.from(original);
    changed[at] = 0x20;
    const fixtureDir = path.join(tmp, 'fixtures-one-byte');
    cpSync(path.dirname(root.fixture), fixtureDir, { recursive: true });
    const fixture = path.join(fixtureDir, path.basename(root.fixture));
    writeFileSync(fixture, changed);
    const config = withProbes(packed.config, [
      { ...root, fixture },
      probe(packed.config, 'text-about'),
    ]);

    const report = await verifyImage(verifyCtx(memoryLogger()), {
      config,
      image: packed.image,
      dataTemplate: packed.dataTemplate,
    });
    expect(report.ok).toBe(false);
    const row = report.probes.find((p) => p.name === 'root-empty')!;
    expect(row.ok).toBe(false);
    const lineStart = original.lastIndexOf(0x0a, at) + 1;
    expect(row.diff).toContain(
      `first difference at byte ${at} (line ${original.subarray(0, at).toString('latin1').split('\n').length}, column ${at - lineStart + 1}): expected " " (0x20), got "\\t" (0x09)`,
    );
    const line = original.subarray(lineStart, original.indexOf(0x0a, at)).toString('latin1');
    const shown = line.replaceAll('\t', '\\t').replaceAll('\r', '\\r');
    expect(row.diff).toContain(`\n-${shown.replace('\\t', ' ')}\n+${shown}\n`);
    expect(report.probes.find((p) => p.name === 'text-about')!.ok).toBe(true);
    // The curl row compares with the same (changed) fixture, so it fails too.
    expect(report.curl!.ok).toBe(false);
    await expectNothingLeft();
  });
});

describe('interrupted runs clean up', () => {
  it('a timeout during the load leaves nothing behind', async () => {
    const logger = memoryLogger();
    const run = verifyImage(verifyCtx(logger), {
      config: withProbes(packed.config, [probe(packed.config, 'root-empty')]),
      image: packed.image,
      dataTemplate: packed.dataTemplate,
      requests: 100_000,
      concurrency: 8,
      timeoutMs: 20_000,
    });
    await expect(run).rejects.toThrow(/verify timed out after 20 s/);
    // It was really mid-run: the load had started.
    expect(logger.lines.some((l) => l.startsWith('load: 100000 requests'))).toBe(true);
    await expectNothingLeft();
  });

  it('SIGTERM to the CLI mid-run leaves nothing behind', async () => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(REPO, 'src/cli-entry.ts'),
        'verify',
        packed.config.file,
        '--image',
        packed.image,
        '--data',
        packed.dataTemplate,
        '--requests',
        '100000',
      ],
      { cwd: REPO, env: { ...process.env, TMPDIR: ourTmp() }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    const exited = new Promise<number | null>((resolve) =>
      child.on('exit', (code) => resolve(code)),
    );
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the load never started:\n${stderr}`)), 300_000);
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('load: 100000 requests')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    // Containers are running right now: mounts, loop device, nspawn and payloads all exist.
    const during = await snapshot(tmp);
    expect(during.mounts.length).toBe(2);
    expect(during.loops.length).toBe(1);
    child.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r('still running 60 s after SIGTERM'), 60_000)),
    ]);
    if (typeof code === 'string') child.kill('SIGKILL');
    expect(code, stderr).toBe(143);
    await expectNothingLeft();
  });
});

describe('a hardening check can fail', () => {
  it('goes red on a container started without --read-only, -U, --private-network and the capability drops', async () => {
    // A writable directory root (a copy of the image's tree) and a data dir that allows exec.
    const softRoot = path.join(tmp, 'soft-root');
    cpSync(packed.root, softRoot, { recursive: true });
    const dataDir = path.join(tmp, 'soft-data');
    await mkdir(dataDir);
    const argv = nspawnArgv({
      root: softRoot,
      dataDir,
      dataPath: '/data',
      command: ['/bin/lua', '-e', 'io.read("a")'],
      machineName: `lhc-soft-${process.pid}`,
    });
    const c = start(argv, { stdin: 'pipe', logger: memoryLogger() });
    try {
      let payload: number | undefined;
      for (let i = 0; i < 300 && payload === undefined; i++) {
        payload = findPayloads(c.pid)[0]?.pid;
        if (payload === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(payload, 'the soft container never started').toBeDefined();
      const rows = Object.fromEntries(
        (await inspectProcess(payload!, '/data')).map((r) => [r.name, r]),
      );
      expect(rows['root mounted read-only']!.ok).toBe(false);
      expect(rows['/data noexec,nosuid,nodev']!).toMatchObject({
        ok: false,
        detail: expect.stringMatching(/^missing noexec/),
      });
      expect(rows['uid 0 inside is not 0 outside']!.ok).toBe(false);
      expect(rows['NoNewPrivs set']!.ok).toBe(false);
      expect(rows['CAP_NET_ADMIN, CAP_SYS_ADMIN not in bounding set']!.ok).toBe(false);
      // nspawn's own /tmp, /run and /dev/shm are writable and allow exec.
      for (const p of ['/tmp', '/run', '/dev/shm'])
        expect(rows[`${p} absent or noexec,nosuid,nodev`]!).toMatchObject({
          ok: false,
          detail: expect.stringMatching(/^missing noexec: tmpfs/),
        });
      // Without --private-network the container shares the host's interfaces.
      expect(rows['no network interface but lo']!.ok).toBe(false);
    } finally {
      await c.stop();
    }
  });
});

describe('a listening service', () => {
  it('is reached inside its network namespace: busybox httpd, http probes, curl, hardening', async () => {
    const dir = path.join(tmp, 'httpd');
    const root = path.join(dir, 'root');
    const bb = await extractDeb(await debianDeb('busybox-static:arm64'), path.join(dir, 'deb'));
    await makeScratchRoot(root);
    await mkdir(path.join(root, 'data'));
    await mkdir(path.join(root, 'www'));
    cpSync(path.join(bb, 'bin/busybox'), path.join(root, 'bin/busybox'));
    writeFileSync(path.join(root, 'www/index.html'), '<p>moon\tbase</p>\r\n');
    const fixture = path.join(dir, 'index.html');
    writeFileSync(fixture, '<p>moon\tbase</p>\r\n');
    const configFile = path.join(dir, 'lhc.yml');
    writeFileSync(
      configFile,
      [
        'name: httpd',
        'service:',
        '  command: [/bin/busybox, httpd, -f, -p, "8080", -h, /www]',
        '  listen: 8080',
        '  timeout: 60',
        'probes:',
        '  - { name: index, type: http, path: /index.html, status: 200, fixture: index.html }',
        '  - { name: missing, type: http, path: /nope, status: 404 }',
      ].join('\n'),
    );
    const config = await loadConfig(configFile);
    const out = await packImage(
      stageContext({ logger: memoryLogger(), workDir: dir, outDir: path.join(dir, 'out') }),
      { root, name: 'httpd', epoch: 0 },
    );
    const report = await verifyImage(verifyCtx(memoryLogger()), {
      config,
      image: out.image,
      dataTemplate: out.dataTemplate,
      requests: 20,
      concurrency: 4,
    });
    const text = formatVerifyReport(report).join('\n');
    expect(
      report.probes.filter((p) => !p.ok),
      text,
    ).toEqual([]);
    expect(report.curl, text).toMatchObject({ name: 'index (curl)', ok: true });
    expect(report.endpoint).toMatch(/^unix:.*service\.sock$/);
    expect(report.load, text).toMatchObject({ requests: 20, failures: 0 });
    // The same image served by something else would carry a shell it does not need.
    expect(checkNoInterpreters(await listImage(root), '/bin/lua')).toMatchObject({
      ok: false,
      detail: 'found /bin/busybox',
    });
    // busybox is a shell too, but here it is the service itself.
    expect(
      report.hardening.find((h) => h.name === 'no shell or interpreter but the service')!.ok,
    ).toBe(true);
    expect(
      report.hardening.filter((h) => !h.ok && !h.name.startsWith('CAP_')),
      text,
    ).toEqual([]);
    await expectNothingLeft();
  });
});

describe('the data template', () => {
  it('unpacks with modes and owners (symlinks too) exactly as packed', async () => {
    const src = path.join(tmp, 'tmpl-src');
    await mkdir(path.join(src, 'spool'), { recursive: true });
    await chmod(path.join(src, 'spool'), 0o1777);
    writeFileSync(path.join(src, 'secret'), 'x');
    await chmod(path.join(src, 'secret'), 0o600);
    writeFileSync(path.join(src, 'tool'), 'y');
    await chmod(path.join(src, 'tool'), 0o777);
    await symlink('secret', path.join(src, 'link'));
    const template = path.join(tmp, 'tmpl.tar.gz');
    await writeDataTemplate({
      dataDir: src,
      dataPath: '/data',
      epoch: 0,
      out: template,
      owner: { uid: 1234, gid: 5678 },
    });
    const dir = path.join(tmp, 'tmpl-out');
    await mkdir(dir);
    await unpackTemplate(template, dir);
    const st = (p: string) => lstatSync(path.join(dir, p));
    expect(['spool', 'secret', 'tool'].map((p) => st(p).mode & 0o7777)).toEqual([
      0o1777, 0o600, 0o777,
    ]);
    expect(
      ['.', 'spool', 'secret', 'tool', 'link'].map((p) => `${st(p).uid}:${st(p).gid}`),
    ).toEqual(Array(5).fill('1234:5678'));
    expect(readlinkSync(path.join(dir, 'link'))).toBe('secret');
  });
});
