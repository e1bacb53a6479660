/**
 * nspawn: where a container's start-up goes. The gophermoon image is mounted read-only (with a
 * tmpfs data directory, as verify does) and one request (`/`) is answered by a fresh process per
 * run, under a ladder of command lines from a plain chroot (binfmt runs the aarch64 Lua) up to the
 * board's own (boardNspawnArgv), plus single-change variants of the board line. Runs are
 * interleaved (round after round of every variant) so a change in machine load hits all of them
 * alike; each wall line is the median of ROUNDS runs, each `cpu` line the mean CPU time (user +
 * system, the run and all its children, from /proc/self/stat) of those runs, which a busy shared
 * machine disturbs far less than wall time. Every answer is checked against the chroot's. Last,
 * the board line before and after is run CONCURRENT at a time, as a loaded board starts them.
 *
 * Where nspawn 252's own time goes (strace -f and perf on this host and inside the simulated
 * board, 2026-12-02): starting the binary (libsystemd-shared, libseccomp, ... relocated:
 * `systemd-nspawn --version` alone is about 20 ms of CPU); the seccomp allow-list filters, built
 * with libseccomp for three architectures (x86-64, x86, x32) and loaded with an audit filter each,
 * about a third of nspawn's CPU (SYSTEMD_SECCOMP=0, a diagnostic row only: it would drop a layer
 * of the sandbox); five forks (outer child, two idmap helpers, inner child, and at exit the one
 * that moves interfaces back out of the private network, which runs even with none); about 70
 * mount calls. No sleeps or timeouts, no bus connections (`--register=no --keep-unit`).
 *
 * What was cut: `--settings=no` (no .nspawn lookups; mostly it keeps an admin's file from changing
 * the container), and `-U` (PICK) for the service's fixed --private-users= range
 * (serviceUsernsFlags): PICK takes /etc/.pwd.lock for the whole set-up, seccomp included, so
 * concurrent starts queue, and asks NSS four times per start. Without that lock, containers that
 * share a machine name race on nspawn's /run/systemd/nspawn/propagate/NAME (an exiting one
 * removes it while a starting one is about to bind it), so the board unit and verify name each
 * connection's container (the concurrency rows do too, and count failed starts). Tried and left
 * out:
 * SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (10 mounts, 24 chowns and about 240 syscalls fewer on this
 * cgroup-v1 hybrid host, a no-op on a unified board, within noise) and SYSTEMD_NSPAWN_TMPFS_TMP=0
 * (one mount fewer): neither is worth an environment every caller and the unit must carry.
 *
 * Not measured, because it does not run: the board line with --network-namespace-path= to a
 * persistent namespace instead of --private-network. With a user namespace, nspawn 252 joins the
 * namespace from inside the container's new user namespace, which does not own it ("Failed to
 * join network namespace: Operation not permitted"). What does run was measured on the simulated
 * board instead (board CPU per connection through a cpuacct cgroup, variants interleaved on one
 * board, 2026-12-02): nspawn without --private-network in the unit's own PrivateNetwork=
 * namespace (one per connection), or in one namespace per service joined with JoinsNamespaceOf=,
 * cost within 2 ms of the ~185 ms per connection that --private-network does; neither was built.
 * On the same board the seccomp filters (SYSTEMD_SECCOMP=0, diagnostic) were 45-60 ms of CPU and
 * about 40 ms of p50 per connection: nspawn 252 completes its allow-list with an EPERM rule for
 * every other syscall it knows ("@known"), for each architecture, so no --system-call-filter=
 * shrinks that work.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { memoryLogger } from '../../src/core/logger.js';
import { mapBounded } from '../../src/core/parallel.js';
import { releaseMachineName } from '../../src/harness/machine-name.js';
import { unpackTemplate } from '../../src/harness/data.js';
import { mountDataTmpfs, mountImageReadOnly, unmount } from '../../src/harness/mounts.js';
import { gopherRequest } from '../../src/harness/client.js';
import { DEFAULT_LIMITS } from '../../src/config/schema.js';
import {
  BASE_FLAGS,
  HARDENING_FLAGS,
  USERNS_FLAGS,
  boardNspawnArgv,
  limitFlags,
  serviceUsernsFlags,
} from '../../src/tools/nspawn.js';
import { packedGophermoon, requireTools } from '../support/verify-image.js';
import type { BenchSection, Measurement } from './section.js';

const ROUNDS = Number(process.env.LHC_BENCH_NSPAWN_ROUNDS ?? 40);
/** Containers started at once in the concurrency rows, and how many each row starts in all. */
const CONCURRENT = 8;
const CONCURRENT_RUNS = Number(process.env.LHC_BENCH_NSPAWN_CONCURRENT_RUNS ?? 48);

/** CPU seconds of this process's waited-for children (cutime + cstime; USER_HZ is 100 on Linux). */
function childCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // After "pid (comm) ", field 3 (state) is index 0: cutime and cstime are fields 16 and 17.
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/** One request through argv; resolves to its wall time and answer. */
function once(
  argv: readonly string[],
  input: Buffer,
  env?: Readonly<Record<string, string>>,
): Promise<{ ms: number; out: Buffer }> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    // A hung run (e.g. nspawn waiting on a console) is a failure, not a stall of the bench.
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 20_000,
      ...(env ? { env: { ...process.env, ...env } } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - t;
      if (code !== 0)
        reject(new Error(`exit ${code}: ${Buffer.concat(err).toString().trim().slice(-400)}`));
      else resolve({ ms, out: Buffer.concat(out) });
    });
    child.stdin.end(input);
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Variant {
  name: string;
  argv: string[];
  env?: Record<string, string>;
}

interface Lines {
  all: Variant[];
  /** The board line before the cuts (settings lookup) and as it is now. */
  before: Variant;
  after: Variant;
  /** The board line with -U (a picked user range) instead of the service's fixed one. */
  picked: Variant;
}

/**
 * The ladder and the single-change variants. `netnsPath` is a persistent network namespace (only
 * lo, down, no route) to join instead of creating one per run.
 */
function variants(
  root: string,
  dataDir: string,
  command: readonly string[],
  env: Record<string, string>,
  netnsPath: string,
): Lines {
  const setenv = Object.entries(env).map(([k, v]) => `--setenv=${k}=${v}`);
  const nspawn = (flags: readonly string[], base: readonly string[] = BASE_FLAGS) => [
    'systemd-nspawn',
    ...base,
    `--directory=${root}`,
    '--read-only',
    ...flags,
    ...setenv,
    '--',
    ...command,
  ];
  const userns: readonly string[] = USERNS_FLAGS;
  const idmapBind = `--bind=${dataDir}:/data:idmap`;
  const hardeningWithout = (drop: string) => HARDENING_FLAGS.filter((f) => f !== drop);
  const board = boardNspawnArgv({
    root,
    dataDir,
    dataPath: '/data',
    command,
    env,
    limits: DEFAULT_LIMITS,
    service: 'gophermoon',
  });
  const fixedUserns = serviceUsernsFlags('gophermoon');
  const boardWith = (from: string, to: string[]) => board.flatMap((f) => (f === from ? to : [f]));
  const withoutBase = (flag: string) => BASE_FLAGS.filter((f) => f !== flag);
  const before: Variant = {
    name: 'board line before (settings lookup)',
    argv: board.filter((f) => f !== '--settings=no'),
  };
  const picked: Variant = {
    name: 'board line with -U (picked user range, before)',
    argv: boardWith(fixedUserns[0]!, ['-U']),
  };
  const after: Variant = { name: 'board line (fixed user range per service)', argv: board };
  // The payload with nothing but a chroot and the service's environment around it.
  const chrooted = [
    'env',
    '-i',
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    '/usr/sbin/chroot',
    root,
    ...command,
  ];
  const all: Variant[] = [
    { name: 'chroot (no container)', argv: chrooted },
    {
      // The kernel's share: the namespaces nspawn makes, without nspawn's own setup.
      name: 'unshare mount,pid,uts,ipc,net + chroot',
      argv: ['unshare', '--mount', '--pid', '--fork', '--uts', '--ipc', '--net', ...chrooted],
    },
    { name: 'nspawn read-only', argv: nspawn([]) },
    { name: 'nspawn +private-network', argv: nspawn(['--private-network']) },
    {
      name: 'nspawn +network-namespace-path',
      argv: nspawn([`--network-namespace-path=${netnsPath}`]),
    },
    { name: 'nspawn +userns map +idmap data', argv: nspawn([...userns, idmapBind]) },
    {
      name: 'nspawn +private-network +userns',
      argv: nspawn(['--private-network', ...userns, idmapBind]),
    },
    {
      name: 'nspawn +hardening +userns',
      argv: nspawn([...HARDENING_FLAGS, ...userns, idmapBind]),
    },
    {
      name: 'nspawn +hardening -tmpfs +userns',
      argv: nspawn([
        ...HARDENING_FLAGS.filter((f) => !f.startsWith('--tmpfs=')),
        ...userns,
        idmapBind,
      ]),
    },
    before,
    picked,
    after,
    {
      name: 'board line +SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (tried, not applied)',
      argv: board,
      env: { SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1' },
    },
    {
      name: 'board line +SYSTEMD_NSPAWN_TMPFS_TMP=0 (tried, not applied)',
      argv: board,
      env: { SYSTEMD_NSPAWN_TMPFS_TMP: '0' },
    },
    {
      // What the seccomp filters cost; turning them off would weaken the sandbox.
      name: 'board line +SYSTEMD_SECCOMP=0 (diagnostic only)',
      argv: board,
      env: { SYSTEMD_SECCOMP: '0' },
    },
    {
      name: 'board line, no userns (plain data bind)',
      argv: board
        .filter((f) => !fixedUserns.includes(f))
        .map((f) => (f.endsWith(':idmap') ? f.slice(0, -':idmap'.length) : f)),
    },
    ...['--link-journal=no', '--timezone=off', '--resolv-conf=off'].map((flag) => ({
      name: `nspawn read-only without ${flag}`,
      argv: nspawn([], withoutBase(flag)),
    })),
    {
      name: 'hardening without drop-capability',
      argv: nspawn([...hardeningWithout(HARDENING_FLAGS[1]), ...userns, idmapBind]),
    },
    { name: 'board +limits flags only', argv: nspawn([...limitFlags(DEFAULT_LIMITS)]) },
  ];
  return { all, before, after, picked };
}

/**
 * A network namespace that outlives its creator: only lo (down), bound onto a file. Plain
 * execFileSync: these host tools are the bench's, not lhc's (no rows in the requirements table).
 */
async function persistentNetns(file: string): Promise<() => Promise<void>> {
  await writeFile(file, '');
  execFileSync('unshare', [`--net=${file}`, 'true']);
  const links = execFileSync('nsenter', [`--net=${file}`, 'ip', '-o', 'link'], {
    encoding: 'utf8',
  }).trim();
  const routes = execFileSync('nsenter', [`--net=${file}`, 'ip', 'route', 'show', 'table', 'all'], {
    encoding: 'utf8',
  }).trim();
  if (links.split('\n').length !== 1 || !links.includes(' lo:') || routes !== '')
    throw new Error(`the persistent network namespace is not empty:\n${links}\n${routes}`);
  return () => Promise.resolve(void execFileSync('umount', [file]));
}

const round1 = (v: number) => Math.round(v * 10) / 10;

/** Sequential rounds of every variant, interleaved: wall medians and mean CPU per run. */
async function ladder(
  ctx: { log(l: string): void },
  vs: Variant[],
  input: Buffer,
): Promise<Measurement[]> {
  const times = vs.map(() => [] as number[]);
  const cpu = vs.map(() => 0);
  const failed = new Map<number, string>();
  let expected: Buffer | undefined;
  ctx.log(`${ROUNDS} rounds of ${vs.length} variants, interleaved`);
  for (let r = -1; r < ROUNDS; r++) {
    for (const [i, v] of vs.entries()) {
      if (failed.has(i)) continue;
      try {
        const c0 = childCpuMs();
        const { ms, out } = await once(v.argv, input, v.env);
        const c = childCpuMs() - c0;
        expected ??= out;
        if (out.length === 0 || !out.equals(expected))
          throw new Error('answer differs from the chroot run');
        // Round -1 warms the page cache and nspawn's first-run setup; it is not counted.
        if (r >= 0) {
          times[i]!.push(ms);
          cpu[i]! += c;
        }
      } catch (e) {
        failed.set(i, (e as Error).message);
        ctx.log(`${v.name}: ${(e as Error).message}`);
      }
    }
  }
  const out: Measurement[] = [];
  for (const [i, v] of vs.entries()) {
    if (failed.has(i)) continue;
    out.push({ metric: `${v.name} p50`, value: round1(median(times[i]!)), unit: 'ms' });
    out.push({ metric: `${v.name} cpu`, value: round1(cpu[i]! / ROUNDS), unit: 'ms' });
  }
  return out;
}

/**
 * CONCURRENT_RUNS starts of one line, CONCURRENT at a time, each with a machine name of its own
 * and no image lock, as the board's unit runs them: throughput, per-run p50 and failed starts (a
 * failed start is a result here).
 */
async function concurrently(v: Variant, input: Buffer, expected: Buffer) {
  const t = performance.now();
  const runs = await mapBounded(
    Array.from({ length: CONCURRENT_RUNS }, (_, i) => i),
    CONCURRENT,
    async (i) => {
      const argv = [v.argv[0]!, `--machine=lhc-bench-${process.pid}-${i}`, ...v.argv.slice(1)];
      const env = { SYSTEMD_NSPAWN_LOCK: '0', ...v.env };
      const r = await once(argv, input, env).catch(() => undefined);
      if (r && !r.out.equals(expected))
        throw new Error(`${v.name}: answer differs under concurrency`);
      return r?.ms;
    },
  );
  const ok = runs.filter((ms): ms is number => ms !== undefined);
  return {
    rps: ok.length / ((performance.now() - t) / 1000),
    p50: median(ok),
    failures: runs.length - ok.length,
  };
}

export const nspawnSection: BenchSection = {
  name: 'nspawn',
  async run(ctx) {
    await requireTools();
    const logger = memoryLogger();
    ctx.log('packing the gophermoon image');
    const packed = await packedGophermoon(ctx.workDir);
    const rootDir = path.join(ctx.workDir, 'root');
    const dataDir = path.join(ctx.workDir, 'data');
    await mkdir(rootDir);
    await mkdir(dataDir);
    await mountImageReadOnly(packed.image, rootDir, logger);
    const cleanup: (() => Promise<void>)[] = [() => unmount(rootDir, logger)];
    try {
      await mountDataTmpfs(dataDir, logger);
      cleanup.push(() => unmount(dataDir, logger));
      await unpackTemplate(packed.dataTemplate, dataDir, { logger });
      const netnsFile = path.join(ctx.workDir, 'netns');
      cleanup.push(await persistentNetns(netnsFile));
      const lines = variants(
        rootDir,
        dataDir,
        packed.config.service.command,
        packed.config.service.env ?? {},
        netnsFile,
      );
      const input = gopherRequest('/');
      const startup = {
        name: 'systemd-nspawn --version (start-up floor)',
        argv: ['systemd-nspawn', '--version'],
      };
      const out = await ladder(ctx, lines.all, input);
      // The binary alone, its own ladder: its output is a version, not an answer.
      let cpu = 0;
      const floor: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const c0 = childCpuMs();
        floor.push((await once(startup.argv, Buffer.alloc(0))).ms);
        cpu += childCpuMs() - c0;
      }
      out.push({ metric: `${startup.name} p50`, value: round1(median(floor)), unit: 'ms' });
      out.push({ metric: `${startup.name} cpu`, value: round1(cpu / ROUNDS), unit: 'ms' });

      ctx.log(
        `-U and the fixed range, ${CONCURRENT_RUNS} runs ${CONCURRENT} at a time, twice each`,
      );
      const expected = (await once(lines.after.argv, input)).out;
      const conc = new Map<string, { rps: number[]; p50: number[]; failures: number }>();
      for (let r = 0; r < 2; r++) {
        for (const v of [lines.picked, lines.after]) {
          const c = await concurrently(v, input, expected);
          const acc = conc.get(v.name) ?? { rps: [], p50: [], failures: 0 };
          acc.rps.push(c.rps);
          acc.p50.push(c.p50);
          acc.failures += c.failures;
          conc.set(v.name, acc);
        }
      }
      // Where /run is no tmpfs (no systemd as PID 1) nspawn leaves those names' state behind.
      await releaseMachineName(`lhc-bench-${process.pid}`);
      for (const [name, c] of conc) {
        const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
        out.push({
          metric: `${name} ${CONCURRENT_RUNS}@${CONCURRENT} throughput`,
          value: round1(mean(c.rps)),
          unit: 'runs/s',
        });
        out.push({
          metric: `${name} ${CONCURRENT_RUNS}@${CONCURRENT} p50`,
          value: Math.round(mean(c.p50)),
          unit: 'ms',
        });
        out.push({
          metric: `${name} ${CONCURRENT_RUNS}@${CONCURRENT} failed starts (of ${2 * CONCURRENT_RUNS})`,
          value: c.failures,
          unit: 'count',
        });
      }
      return out;
    } finally {
      for (const c of cleanup.reverse()) await c().catch(() => undefined);
    }
  },
};
