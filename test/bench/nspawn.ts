/**
 * nspawn: where a container's start-up goes. The gophermoon image is mounted read-only (with a
 * tmpfs data directory, as verify does) and one request (`/`) is answered by a fresh process per
 * run, under a ladder of command lines from a plain chroot (binfmt runs the aarch64 Lua) up to the
 * board's own (boardNspawnArgv), plus single-flag variants of the board line. Runs are interleaved
 * (round after round of every variant) so a change in machine load hits all of them alike; each
 * line is the median of ROUNDS runs and every answer is checked against the chroot's.
 *
 * Not measured, because it does not run: the board line with --network-namespace-path= to a
 * persistent namespace instead of --private-network. With -U, nspawn 252 joins the namespace
 * from inside the container's new user namespace, which does not own it ("Failed to join network
 * namespace: Operation not permitted"); a shared network namespace would need the user namespace
 * given up, or made once and shared too.
 *
 * Why the board line was left as it is (80 rounds, 2026-12-02, a loaded 2-core host): chroot 114
 * ms, the same namespaces by unshare 127, nspawn read-only 213, the board line 251. nspawn's own
 * setup (about 100 ms) is most of the price; each sandbox flag adds 10-25 ms, and the one cut
 * that runs (a fixed --private-users= range instead of PICK, -12 ms) is near the ±10 ms noise
 * and would make the board allocate user ranges itself.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { memoryLogger } from '../../src/core/logger.js';
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
} from '../../src/tools/nspawn.js';
import { packedGophermoon, requireTools } from '../support/verify-image.js';
import type { BenchSection, Measurement } from './section.js';

const ROUNDS = Number(process.env.LHC_BENCH_NSPAWN_ROUNDS ?? 40);
/** A uid range for --private-users=BASE:65536 outside nspawn's PICK pool (0x00080000-0x6FFF0000 is its pool on 252). */
const FIXED_RANGE = '1879048192:65536';

/** One request through argv; resolves to its wall time and answer. */
function once(argv: readonly string[], input: Buffer): Promise<{ ms: number; out: Buffer }> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    // A hung run (e.g. nspawn waiting on a console) is a failure, not a stall of the bench.
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 20_000,
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
}

/**
 * The ladder and the single-flag variants. `netnsPath` is a persistent network namespace (only
 * lo, down, no route) to join instead of creating one per run.
 */
function variants(
  root: string,
  dataDir: string,
  command: readonly string[],
  env: Record<string, string>,
  netnsPath: string,
): Variant[] {
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
  const idmapBind = `--bind=${dataDir}:/data:idmap`;
  const hardeningWithout = (drop: string) => HARDENING_FLAGS.filter((f) => f !== drop);
  const board = boardNspawnArgv({
    root,
    dataDir,
    dataPath: '/data',
    command,
    env,
    limits: DEFAULT_LIMITS,
  });
  const boardWith = (from: string, to: string[]) => board.flatMap((f) => (f === from ? to : [f]));
  const without = (flag: string) => BASE_FLAGS.filter((f) => f !== flag);
  return [
    {
      name: 'chroot (no container)',
      argv: [
        'env',
        '-i',
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
        '/usr/sbin/chroot',
        root,
        ...command,
      ],
    },
    {
      // The kernel's share: the namespaces nspawn makes, without nspawn's own setup.
      name: 'unshare mount,pid,uts,ipc,net + chroot',
      argv: [
        'unshare',
        '--mount',
        '--pid',
        '--fork',
        '--uts',
        '--ipc',
        '--net',
        'env',
        '-i',
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
        '/usr/sbin/chroot',
        root,
        ...command,
      ],
    },
    { name: 'nspawn read-only', argv: nspawn([]) },
    { name: 'nspawn +private-network', argv: nspawn(['--private-network']) },
    {
      name: 'nspawn +network-namespace-path',
      argv: nspawn([`--network-namespace-path=${netnsPath}`]),
    },
    { name: 'nspawn +userns map +idmap data', argv: nspawn([...USERNS_FLAGS, idmapBind]) },
    {
      name: 'nspawn +private-network +userns',
      argv: nspawn(['--private-network', ...USERNS_FLAGS, idmapBind]),
    },
    {
      name: 'nspawn +hardening +userns',
      argv: nspawn([...HARDENING_FLAGS, ...USERNS_FLAGS, idmapBind]),
    },
    {
      name: 'nspawn +hardening -tmpfs +userns',
      argv: nspawn([
        ...HARDENING_FLAGS.filter((f) => !f.startsWith('--tmpfs=')),
        ...USERNS_FLAGS,
        idmapBind,
      ]),
    },
    {
      name: 'nspawn +hardening +userns +limits (board)',
      argv: board,
    },
    {
      name: 'board, fixed user range',
      argv: boardWith('-U', [`--private-users=${FIXED_RANGE}`]),
    },
    {
      name: 'board, no userns (plain data bind)',
      argv: board
        .filter((f) => !(USERNS_FLAGS as readonly string[]).includes(f))
        .map((f) => (f.endsWith(':idmap') ? f.slice(0, -':idmap'.length) : f)),
    },
    ...['--link-journal=no', '--timezone=off', '--resolv-conf=off'].map((flag) => ({
      name: `nspawn read-only without ${flag}`,
      argv: nspawn([], without(flag)),
    })),
    {
      name: 'hardening without drop-capability',
      argv: nspawn([...hardeningWithout(HARDENING_FLAGS[1]), ...USERNS_FLAGS, idmapBind]),
    },
    { name: 'board +limits flags only', argv: nspawn([...limitFlags(DEFAULT_LIMITS)]) },
  ];
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
      const vs = variants(
        rootDir,
        dataDir,
        packed.config.service.command,
        packed.config.service.env ?? {},
        netnsFile,
      );
      const input = gopherRequest('/');
      const times = vs.map(() => [] as number[]);
      const failed = new Map<number, string>();
      let expected: Buffer | undefined;
      ctx.log(`${ROUNDS} rounds of ${vs.length} variants, interleaved`);
      for (let r = -1; r < ROUNDS; r++) {
        for (const [i, v] of vs.entries()) {
          if (failed.has(i)) continue;
          try {
            const { ms, out } = await once(v.argv, input);
            expected ??= out;
            if (out.length === 0 || !out.equals(expected))
              throw new Error('answer differs from the chroot run');
            // Round -1 warms the page cache and nspawn's first-run setup; it is not counted.
            if (r >= 0) times[i]!.push(ms);
          } catch (e) {
            failed.set(i, (e as Error).message);
            ctx.log(`${v.name}: ${(e as Error).message}`);
          }
        }
      }
      const out: Measurement[] = [];
      for (const [i, v] of vs.entries()) {
        if (failed.has(i)) continue;
        out.push({
          metric: `${v.name} p50`,
          value: Math.round(median(times[i]!) * 10) / 10,
          unit: 'ms',
        });
      }
      return out;
    } finally {
      for (const c of cleanup.reverse()) await c().catch(() => undefined);
    }
  },
};
