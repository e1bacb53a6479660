/**
 * The deploy bundle of the real gophermoon build: build() on examples/gophermoon (verify off; the
 * bundle is what is under test here), then systemd-analyze verify on the units it wrote (and a
 * broken copy, to prove the check can fail), and its OCI config.json run by Debian's runc over
 * the loop-mounted read-only image and a noexec data partition made from the template, the way
 * the bundle's README installs it. Every gopher probe of lhc.yml goes in on stdin and must come
 * back byte for byte as its fixture; the container keeps its hardening (read-only root, noexec
 * data, only lo, no capabilities, no new privileges).
 */
import { readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import type { GopherProbe } from '../../src/config/schema.js';
import { memoryLogger } from '../../src/core/logger.js';
import { build } from '../../src/pipeline.js';
import { boardPaths, type BoardPaths } from '../../src/deploy/bundle.js';
import { OCI_USER_NAMESPACE, shiftOwnersCommand } from '../../src/deploy/oci.js';
import { systemdEscapePath } from '../../src/deploy/systemd.js';
import { run } from '../../src/tools/exec.js';
import { gopherRequest } from '../../src/harness/client.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { GOPHERMOON_CONFIG } from '../support/gopher.js';
import { arm64Busybox } from '../support/pack-fixtures.js';
import { snapshot, sweepLeftovers } from '../support/verify-image.js';
import { requireTool } from '../support/require-tool.js';

/** Where build() points the bundle by default; the test installs it under its own dir instead. */
const DEFAULT_BOARD_DIR = '/var/lib/lhc/gophermoon';

let tmp: string;
let config: LhcConfig;
let result: BuildResult;
/** The board layout rooted in the test's temp dir (another test run may use the default one). */
let board: BoardPaths;
/** build()'s oci/config.json with only the board directory moved to `board`. */
let ociDir: string;
let mounted: string[] = [];

function gopherProbes(): GopherProbe[] {
  return config.probes.filter((p): p is GopherProbe => p.type === 'gopher');
}

async function installOnBoard(): Promise<void> {
  // As the bundle's README says: image loop-mounted read-only, data from the template on a noexec mount.
  await mkdir(board.rootMount, { recursive: true });
  await mkdir(board.dataMount, { recursive: true });
  await copyFile(result.image, board.image);
  await run(['mount', '-o', 'loop,ro,nodev', board.image, board.rootMount], { privileged: true });
  mounted.push(board.rootMount);
  await run(['truncate', '-s', '16M', board.dataSource]);
  await run(['mkfs.ext4', '-q', '-F', board.dataSource]);
  await run(['mount', '-o', 'loop,noexec,nosuid,nodev', board.dataSource, board.dataMount], {
    privileged: true,
  });
  mounted.push(board.dataMount);
  await run(['tar', '-xzpf', result.dataTemplate, '--numeric-owner', '-C', board.dataMount], {
    privileged: true,
  });
  // The bundle README's step for runc, whose user namespace cannot idmap the data mount.
  await run(['sh', '-c', shiftOwnersCommand(board.dataMount)], { privileged: true });
}

beforeAll(async () => {
  for (const [tool, pkg] of [
    ['mksquashfs', 'squashfs-tools'],
    ['systemd-analyze', 'systemd'],
    ['systemd-nspawn', 'systemd-container'],
    ['qemu-aarch64-static', 'qemu-user-static'],
    ['aarch64-linux-gnu-gcc', 'gcc-aarch64-linux-gnu'],
    ['runc', 'runc'],
    ['mount', 'mount'],
    ['losetup', 'mount'],
    ['mkfs.ext4', 'e2fsprogs'],
    ['findmnt', 'util-linux'],
  ]) {
    await requireTool(tool!, pkg!);
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-deploy-'));
  // runc's user namespace maps root away: like the board's /var/lib/lhc (0755), the path to
  // the image mount must be searchable by others, which mkdtemp's 0700 is not.
  await chmod(tmp, 0o755);
  expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
  config = await loadConfig(GOPHERMOON_CONFIG);
  const { cacheDir, store } = await seededBuildCache();
  result = await build(config, {
    outDir: path.join(tmp, 'out'),
    workDir: path.join(tmp, 'work'),
    logger: memoryLogger(),
    store,
    cacheDir,
    verify: false,
    env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
  });

  board = boardPaths({
    name: config.name,
    boardDir: path.join(tmp, 'board'),
    imageFile: path.basename(result.image),
  });
  const shipped = await readFile(path.join(result.bundleDir, 'oci/config.json'), 'utf8');
  // The board directory must appear exactly where the image and the data partition are used.
  expect(shipped.split(DEFAULT_BOARD_DIR).length - 1).toBe(2);
  ociDir = path.join(tmp, 'oci');
  await mkdir(ociDir);
  await writeFile(
    path.join(ociDir, 'config.json'),
    shipped.replaceAll(DEFAULT_BOARD_DIR, board.boardDir),
  );
  const oci = JSON.parse(await readFile(path.join(ociDir, 'config.json'), 'utf8')) as {
    root: { path: string };
    mounts: { destination: string; source: string }[];
  };
  expect(oci.root.path).toBe(board.rootMount);
  expect(oci.mounts.find((m) => m.destination === config.data.path)?.source).toBe(board.dataMount);

  await installOnBoard();
});

afterAll(async () => {
  for (const m of mounted.reverse()) await run(['umount', m], { privileged: true, reject: false });
  mounted = [];
  if (!tmp) return;
  // Only after a failure is there anything left (a container, a lazy mount, a loop device).
  await sweepLeftovers(tmp);
  await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true, reject: false });
});

async function verify(dir: string, units: string[]): Promise<{ exitCode: number; output: string }> {
  const r = await run(['systemd-analyze', 'verify', ...units.map((u) => `./${u}`)], {
    cwd: dir,
    reject: false,
  });
  return { exitCode: r.exitCode, output: (r.stdout + r.stderr).trim() };
}

describe('the systemd units build() wrote for gophermoon', () => {
  const shippedPaths = () =>
    boardPaths({ name: config.name, imageFile: path.basename(result.image) });

  it('are the socket, the warm-container template and the two mounts, and pass systemd-analyze verify without a warning', async () => {
    const p = shippedPaths();
    expect(p.boardDir).toBe(DEFAULT_BOARD_DIR);
    const units = (await readdir(result.bundleDir)).filter((f) =>
      /\.(socket|service|mount)$/.test(f),
    );
    expect(units.sort()).toEqual(
      [
        'gophermoon.socket',
        'gophermoon@.service',
        `${systemdEscapePath(p.rootMount)}.mount`,
        `${systemdEscapePath(p.dataMount)}.mount`,
      ].sort(),
    );
    for (const unit of units) {
      const r = await verify(result.bundleDir, [unit]);
      expect(r, unit).toEqual({ exitCode: 0, output: '' });
    }
    const socket = readFileSync(path.join(result.bundleDir, 'gophermoon.socket'), 'utf8');
    expect(socket).toMatch(/^ListenStream=70$/m);
    // The default: warm containers on the one listening socket, not a unit started per connection.
    expect(socket).toMatch(/^Accept=no$/m);
    expect(socket).toMatch(/^Wants=gophermoon@warm1\.service /m);
  });

  it('a broken copy fails verify, so the check above means something', async () => {
    const broken = path.join(tmp, 'broken');
    await mkdir(broken);
    const service = await readFile(path.join(result.bundleDir, 'gophermoon@.service'), 'utf8');
    expect(service).toContain('/usr/bin/systemd-nspawn');
    await writeFile(
      path.join(broken, 'gophermoon@.service'),
      service.replace('/usr/bin/systemd-nspawn', '/usr/bin/no-such-nspawn'),
    );
    expect((await verify(broken, ['gophermoon@.service'])).exitCode).not.toBe(0);
    const mount = await readFile(
      path.join(result.bundleDir, `${systemdEscapePath(shippedPaths().rootMount)}.mount`),
      'utf8',
    );
    await writeFile(path.join(broken, 'wrong-name.mount'), mount);
    expect((await verify(broken, ['wrong-name.mount'])).output).toMatch(/doesn't match unit name/);
  });

  it('the fstab lines parse with findmnt --verify', async () => {
    const shipped = await readFile(path.join(result.bundleDir, 'fstab'), 'utf8');
    // Moved to the test's board, where sources and targets exist, so findmnt can check it all.
    const fstab = path.join(tmp, 'fstab');
    await writeFile(fstab, shipped.replaceAll(DEFAULT_BOARD_DIR, board.boardDir));
    const r = await run(['findmnt', '--verify', '--verbose', '--tab-file', fstab], {
      reject: false,
    });
    const text = r.stdout + r.stderr;
    expect(text, text).toMatch(/^0 parse errors, 0 errors, \d+ warnings?$/m);
    // findmnt does not know that the `loop` option makes a regular file a fine source.
    const warnings = text.split('\n').filter((l) => l.includes('[W]'));
    for (const w of warnings)
      expect(w).toMatch(
        /non-bind mount source \S+\.(ext4|squashfs) is a directory or regular file/,
      );
    expect(r.exitCode).toBe(0);
  });
});

describe("the OCI bundle under Debian's runc", () => {
  let seq = 0;
  async function runcRun(
    input: Buffer,
    variant?: (c: Record<string, unknown>) => void,
  ): Promise<{ stdout: Buffer; stderr: string; exitCode: number }> {
    let bundleDir = ociDir;
    if (variant) {
      bundleDir = path.join(tmp, `oci-variant-${seq}`);
      await mkdir(bundleDir, { recursive: true });
      const c = JSON.parse(await readFile(path.join(ociDir, 'config.json'), 'utf8')) as Record<
        string,
        unknown
      >;
      variant(c);
      await writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(c));
    }
    // Unique per test process: another test run may have runc containers of its own.
    const id = `lhc-deploy-test-${process.pid}-${seq++}`;
    try {
      const r = await run(['runc', 'run', '--bundle', bundleDir, id], {
        input,
        privileged: true,
        reject: false,
        timeoutMs: 120_000,
      });
      return { stdout: r.stdoutBytes, stderr: r.stderr, exitCode: r.exitCode };
    } finally {
      await run(['runc', 'delete', '--force', id], { privileged: true, reject: false });
    }
  }

  it('answers every gopher probe of lhc.yml with its fixture, byte for byte', async () => {
    const probes = gopherProbes();
    // What the issue asks for at least: the root menu, a text, a binary and a traversal attempt.
    const names = probes.map((p) => p.name);
    for (const must of [
      'root-empty',
      'text-about',
      'binary-png',
      'binary-bytes',
      'traversal-dotdot',
      'traversal-encoded',
    ]) {
      expect(names).toContain(must);
    }
    const failures: string[] = [];
    for (const probe of probes) {
      const want = readFileSync(probe.fixture);
      const r = await runcRun(gopherRequest(probe.selector));
      if (r.exitCode !== 0)
        failures.push(`${probe.name}: runc exited ${r.exitCode}: ${r.stderr.trim()}`);
      else if (!r.stdout.equals(want)) {
        failures.push(
          `${probe.name} (${JSON.stringify(probe.selector)}): got ${r.stdout.length} bytes, fixture ${path.basename(probe.fixture)} has ${want.length}\n` +
            `  got:  ${JSON.stringify(r.stdout.subarray(0, 200).toString('latin1'))}\n` +
            `  want: ${JSON.stringify(want.subarray(0, 200).toString('latin1'))}`,
        );
      }
    }
    expect(failures, failures.join('\n')).toEqual([]);
  });

  it('a response that differs from the fixture would be caught', async () => {
    // The about page is not the root menu: the comparison above is not vacuous.
    const about = gopherProbes().find((p) => p.name === 'text-about')!;
    const root = gopherProbes().find((p) => p.name === 'root-empty')!;
    const r = await runcRun(gopherRequest(about.selector));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(0);
    expect(r.stdout.equals(readFileSync(root.fixture))).toBe(false);
  });

  it('keeps the guarantees: read-only root, noexec data, only lo, no capabilities, no new privileges, root mapped away', async () => {
    // The image holds no shell (only /bin/lua), so the checks run in busybox, bound read-only at
    // /run (an empty mount point in the image); everything else is the shipped config.
    const tools = path.join(tmp, 'tools');
    await mkdir(tools);
    await copyFile(await arm64Busybox(), path.join(tools, 'busybox'));
    const script = [
      'touch /rootfs-write 2>/dev/null && echo root-writable || echo root-readonly',
      'touch /bin/lua 2>/dev/null && echo lua-writable || echo lua-readonly',
      'echo x > /data/lhc-test-w && echo data-writable',
      'cp /run/busybox /data/bb && /data/bb true 2>/dev/null && echo data-exec || echo data-noexec',
      "echo ifaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')",
      "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
      'echo uid_map $(cat /proc/self/uid_map)',
    ].join('\n');
    let shippedArgs: unknown;
    const r = await runcRun(Buffer.alloc(0), (c) => {
      const proc = c.process as { args: string[] };
      shippedArgs = proc.args;
      proc.args = ['/run/busybox', 'sh', '-c', script];
      (c.mounts as object[]).push({
        destination: '/run',
        type: 'bind',
        source: tools,
        options: ['rbind', 'ro', 'nosuid', 'nodev'],
      });
    });
    expect(shippedArgs).toEqual(config.service.command);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.replace(/\s+/g, ' '));
    expect(lines).toEqual([
      'root-readonly',
      'lua-readonly',
      'data-writable',
      'data-noexec',
      'ifaces lo',
      'CapEff: 0000000000000000',
      'CapBnd: 0000000000000000',
      'NoNewPrivs: 1',
      `uid_map 0 ${OCI_USER_NAMESPACE.hostId} ${OCI_USER_NAMESPACE.size}`,
    ]);
  });

  it('leaves no container, mount or loop device of its own behind once the runs are over', async () => {
    const list = await run(['runc', 'list', '-q'], { privileged: true });
    expect(
      list.stdout.split('\n').filter((id) => id.startsWith(`lhc-deploy-test-${process.pid}-`)),
    ).toEqual([]);
    const now = await snapshot(tmp);
    // Only the two board mounts the test made itself (unmounted in afterAll), no process.
    expect(now.mounts.map((l) => l.split(' ')[1]).sort()).toEqual(
      [board.dataMount, board.rootMount].sort(),
    );
    expect(now.loops.length).toBe(2);
    expect(now.processes).toEqual([]);
  });
});
