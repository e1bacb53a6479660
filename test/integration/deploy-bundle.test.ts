/**
 * The deploy bundle for real: systemd-analyze verify on the generated units (and a broken copy,
 * to prove the check can fail), and the OCI bundle run by Debian's runc on a loop-mounted packed
 * image (aarch64 payload under binfmt), answering requests on stdin with the expected bytes and
 * holding its hardening (read-only root, noexec data, only lo, no capabilities).
 */
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../src/core/logger.js';
import { writeDeployBundle, type DeployBundle } from '../../src/stages/deploy-bundle.js';
import { packImage, type PackResult } from '../../src/stages/pack.js';
import { run } from '../../src/tools/exec.js';
import { arm64Busybox, MOUNT_POINTS, requireTool, sampleDataDir } from '../support/pack-fixtures.js';

const NAME = 'gopher-demo';
let tmp: string;
let pack: PackResult;
let bundle: DeployBundle;
let mounted: string[] = [];

/**
 * An inetd-style payload made of busybox: reads one selector line, strips CR, writes the file
 * under /gopher byte for byte. It proves the mechanics (socket-style stdin/stdout through the
 * container, binary-safe) until the gophermoon root from the Lua stage is wired in.
 */
const SERVE = `IFS= read -r sel
sel=\${sel%"$(printf '\\r')"}
case "$sel" in *..*) printf '3bad selector\\r\\n.\\r\\n'; exit 0;; esac
[ -f "/gopher/$sel" ] && cat "/gopher/$sel" || printf '3not found\\r\\n.\\r\\n'
`;

const FIXTURES: Record<string, Buffer> = {
  menu: Buffer.from('iwelcome\tfake\t(NULL)\t0\r\n0about\t/about\tlocalhost\t70\r\n.\r\n'),
  'bin/bytes': Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
};

async function buildRoot(root: string): Promise<void> {
  await mkdir(path.join(root, 'bin'), { recursive: true });
  for (const m of MOUNT_POINTS) await mkdir(path.join(root, m), { recursive: true });
  await copyFile(await arm64Busybox(), path.join(root, 'bin/busybox'));
  await chmod(path.join(root, 'bin/busybox'), 0o755);
  await writeFile(path.join(root, 'bin/serve'), SERVE);
  for (const [sel, bytes] of Object.entries(FIXTURES)) {
    await mkdir(path.dirname(path.join(root, 'gopher', sel)), { recursive: true });
    await writeFile(path.join(root, 'gopher', sel), bytes);
  }
  await chmod(root, 0o755);
}

beforeAll(async () => {
  await requireTool('mksquashfs', 'squashfs-tools');
  await requireTool('systemd-analyze', 'systemd');
  await requireTool('systemd-nspawn', 'systemd-container');
  await requireTool('runc', 'runc');
  await requireTool('mount', 'mount');
  await requireTool('mkfs.ext4', 'e2fsprogs');
  await requireTool('findmnt', 'util-linux');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-deploy-'));
  const root = path.join(tmp, 'root');
  await buildRoot(root);
  const data = await sampleDataDir(path.join(tmp, 'data-src'));
  const out = path.join(tmp, 'out');
  pack = await packImage({ root, dataDir: data, name: NAME, epoch: 1_700_000_000, outDir: out, logger: memoryLogger() });
  bundle = await writeDeployBundle({
    name: NAME,
    outDir: out,
    imageFile: path.basename(pack.image),
    dataTemplateFile: path.basename(pack.dataTemplate),
    // The board layout, rooted in the test's temp dir so the OCI config points at real mounts.
    boardDir: path.join(tmp, 'board'),
    service: { command: ['/bin/busybox', 'sh', '/bin/serve'], env: { GOPHER_ROOT: '/gopher' }, user: 0, inetd: true, timeout: 30 },
    root,
  });
  // Install as the README says: image loop-mounted read-only, data from the template on a noexec mount.
  await mkdir(bundle.paths.rootMount, { recursive: true });
  await mkdir(bundle.paths.dataMount, { recursive: true });
  await copyFile(pack.image, bundle.paths.image);
  await run(['mount', '-o', 'loop,ro,nodev', bundle.paths.image, bundle.paths.rootMount], { privileged: true });
  mounted.push(bundle.paths.rootMount);
  await run(['truncate', '-s', '16M', bundle.paths.dataSource]);
  await run(['mkfs.ext4', '-q', '-F', bundle.paths.dataSource]);
  await run(['mount', '-o', 'loop,noexec,nosuid,nodev', bundle.paths.dataSource, bundle.paths.dataMount], { privileged: true });
  mounted.push(bundle.paths.dataMount);
  await run(['tar', '-xzpf', pack.dataTemplate, '--numeric-owner', '-C', bundle.paths.dataMount]);
});

afterAll(async () => {
  for (const m of mounted.reverse()) await run(['umount', m], { privileged: true, reject: false });
  mounted = [];
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function verify(dir: string, units: string[]): Promise<{ exitCode: number; output: string }> {
  const r = await run(['systemd-analyze', 'verify', ...units.map((u) => `./${u}`)], { cwd: dir, reject: false });
  return { exitCode: r.exitCode, output: (r.stdout + r.stderr).trim() };
}

describe('systemd units', () => {
  it('pass systemd-analyze verify without a single warning', async () => {
    const units = (await readdir(bundle.dir)).filter((f) => /\.(socket|service|mount)$/.test(f));
    expect(units.sort()).toEqual(
      [bundle.units.socket, bundle.units.service, bundle.units.rootMount, bundle.units.dataMount].sort(),
    );
    for (const unit of units) {
      const r = await verify(bundle.dir, [unit]);
      expect(r, unit).toEqual({ exitCode: 0, output: '' });
    }
  });

  it('a broken copy fails verify, so the check above means something', async () => {
    const broken = path.join(tmp, 'broken');
    await mkdir(broken);
    const service = await readFile(path.join(bundle.dir, bundle.units.service), 'utf8');
    await writeFile(path.join(broken, bundle.units.service), service.replace('/usr/bin/systemd-nspawn', '/usr/bin/no-such-nspawn'));
    expect((await verify(broken, [bundle.units.service])).exitCode).not.toBe(0);
    const mount = await readFile(path.join(bundle.dir, bundle.units.rootMount), 'utf8');
    await writeFile(path.join(broken, 'wrong-name.mount'), mount);
    expect((await verify(broken, ['wrong-name.mount'])).output).toMatch(/doesn't match unit name/);
  });

  it('the fstab lines parse with findmnt --verify', async () => {
    const fstab = path.join(bundle.dir, 'fstab');
    // Sources and targets exist here (installed as the README says), so findmnt can check it all.
    const r = await run(['findmnt', '--verify', '--verbose', '--tab-file', fstab], { reject: false });
    const text = r.stdout + r.stderr;
    expect(text, text).toMatch(/^0 parse errors, 0 errors, \d+ warnings?$/m);
    // findmnt does not know that the `loop` option makes a regular file a fine source.
    const warnings = text.split('\n').filter((l) => l.includes('[W]'));
    for (const w of warnings) expect(w).toMatch(/non-bind mount source \S+\.(ext4|squashfs) is a directory or regular file/);
    expect(r.exitCode).toBe(0);
  });
});

describe('OCI bundle under runc', () => {
  let seq = 0;
  async function runcRun(input: string, config?: (c: Record<string, unknown>) => void): Promise<{ stdout: Buffer; stderr: string; exitCode: number }> {
    let bundleDir = path.join(bundle.dir, 'oci');
    if (config) {
      bundleDir = path.join(tmp, `oci-variant-${seq}`);
      await mkdir(bundleDir, { recursive: true });
      const c = JSON.parse(await readFile(path.join(bundle.dir, 'oci/config.json'), 'utf8')) as Record<string, unknown>;
      config(c);
      await writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(c));
    }
    const id = `lhc-test-${process.pid}-${seq++}`;
    try {
      const r = await run(['runc', 'run', '--bundle', bundleDir, id], { input, privileged: true, reject: false, timeoutMs: 60_000 });
      return { stdout: r.stdoutBytes, stderr: r.stderr, exitCode: r.exitCode };
    } finally {
      await run(['runc', 'delete', '--force', id], { privileged: true, reject: false });
    }
  }

  it('serves the fixtures byte for byte from a request on stdin', async () => {
    for (const [sel, bytes] of Object.entries(FIXTURES)) {
      const r = await runcRun(`${sel}\r\n`);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout.toString('hex'), sel).toBe(bytes.toString('hex'));
    }
    const miss = await runcRun('nope\r\n');
    expect(miss.stdout.toString()).toBe('3not found\r\n.\r\n');
  });

  it('keeps the guarantees: read-only root, noexec data, only lo, no capabilities, no new privileges', async () => {
    const script = [
      'touch /rootfs-write 2>/dev/null && echo root-writable || echo root-readonly',
      'echo x > /data/tmp/w && echo data-writable',
      'cp /bin/busybox /data/tmp/bb && /data/tmp/bb true 2>/dev/null && echo data-exec || echo data-noexec',
      "echo ifaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')",
      "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
    ].join('\n');
    const r = await runcRun('', (c) => {
      (c.process as { args: string[] }).args = ['/bin/busybox', 'sh', '-c', script];
    });
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.toString().trim().split('\n').map((l) => l.replace(/\s+/g, ' '));
    expect(lines).toEqual([
      'root-readonly',
      'data-writable',
      'data-noexec',
      'ifaces lo',
      'CapEff: 0000000000000000',
      'CapBnd: 0000000000000000',
      'NoNewPrivs: 1',
    ]);
  });
});
