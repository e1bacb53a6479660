/**
 * Board: what one connection costs on the board's own path, measured in one run on the simulated
 * board (a booted systemd in nspawn, as `lhc verify --board` uses). The gophermoon release is
 * installed with deploy/install.sh and its probes are sent through the board's port 70:
 *
 * - `bare`: the same image's Lua and script behind a plain `Accept=yes` socket on the board, no
 *   sandbox at all (systemd starts the process, binfmt runs it under QEMU): the floor;
 * - `nspawn`: the release's default runtime, one container per connection, warm containers
 *   started ahead of their connection (deploy.warm-containers);
 * - `nspawn-cold`: the same with `warm-containers: 0`, each container started when its
 *   connection arrives;
 * - `systemd`: the release built with `deploy.runtime: systemd` (a hardened unit on the image).
 *
 * Each path gets the same sequential requests: paced (a pause before each, `paced p50`) and back
 * to back (p50/p99), and the same load at concurrency 8. On a
 * cgroup v1 host each path's sequential requests also give the board's CPU time per request
 * (cpuacct), which a busy shared machine disturbs far less than wall time.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { Board } from '../../src/board/machine.js';
import {
  allowEmulation,
  installOnBoard,
  openBoardPort,
  type BoardPort,
} from '../../src/board/verify-board.js';
import { descendants } from '../../src/harness/proc.js';
import { runLoad, type LoadResult } from '../../src/verify/load.js';
import { probeOnce, readFixtures } from '../../src/verify/probes.js';
import { buildOut, testBoardTarball } from '../support/board.js';
import { copyGophermoonCheckout } from '../support/gopher.js';
import type { BenchContext, BenchSection, Measurement } from './section.js';

const SEQUENTIAL = 60;
/** Requests one at a time with a pause before each (the pause is not timed). */
const PACED = { requests: 20, pauseMs: 400 };
const LOAD = { requests: 200, concurrency: 8 };
const BARE_PORT = 7070;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface PathFigures {
  /** Back to back, one at a time. */
  seq: LoadResult;
  /** Median of PACED: one at a time, the board idle before each. */
  pacedP50ms: number;
  load: LoadResult;
  /** CPU milliseconds the whole board spent per sequential request (its systemd included). */
  cpuMs?: number;
}

/** Reads the board's CPU time in ms, when the host lets us account it; see boardCpu(). */
type CpuMeter = () => Promise<number>;

/**
 * The board's processes moved into a cpuacct cgroup of their own (a cgroup v1 host, as this
 * project's machines are; elsewhere undefined): the CPU each request costs the board, which a
 * busy shared machine disturbs far less than wall time. Children inherit it, so every unit the
 * board starts is counted. Returns the meter and its removal.
 */
async function boardCpu(
  board: Board,
  name: string,
): Promise<{ meter?: CpuMeter; remove(): Promise<void> }> {
  const base = '/sys/fs/cgroup/cpuacct';
  const none = { remove: () => Promise.resolve() };
  if (!existsSync(path.join(base, 'cpuacct.usage'))) return none;
  const dir = path.join(base, name);
  try {
    await mkdir(dir);
    for (const p of [board.pid, ...descendants(board.pid).map((x) => x.pid)])
      await writeFile(path.join(dir, 'cgroup.procs'), String(p)).catch(() => undefined);
  } catch {
    return none;
  }
  return {
    meter: async () => Number(await readFile(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1e6,
    // Once the board is off the cgroup is empty; rmdir removes it (the kernel's files go with it).
    remove: () => rmdir(dir).catch(() => undefined),
  };
}

/** Sequential requests, then the load, through one port; every answer checked against its fixture. */
async function measurePath(
  config: LhcConfig,
  port: BoardPort,
  what: string,
  cpu?: CpuMeter,
): Promise<PathFigures> {
  const probes = config.probes;
  const fixtures = await readFixtures(probes);
  const timeoutMs = config.service.timeout * 1000;
  const one = async (i: number) => {
    const p = probes[i % probes.length]!;
    const { outcome } = await probeOnce(p, fixtures.get(p.name), port.endpoint, timeoutMs);
    return outcome.ok ? undefined : `${what} ${p.name}: ${outcome.diff ?? 'failed'}`;
  };
  // Paced first: one request at a time with the board idle in between (what a connection costs
  // when nothing else runs); then back to back, where the board's CPU per request can bound it.
  const paced: number[] = [];
  for (let i = 0; i < PACED.requests; i++) {
    await new Promise((r) => setTimeout(r, PACED.pauseMs));
    const t = performance.now();
    const problem = await one(i);
    if (problem !== undefined) throw new Error(`${what} (paced): ${problem}`);
    paced.push(performance.now() - t);
  }
  const c0 = await cpu?.();
  const seq = await runLoad(SEQUENTIAL, 1, one);
  const cpuMs = c0 === undefined ? undefined : ((await cpu!()) - c0) / SEQUENTIAL;
  if (seq.failures > 0) throw new Error(`${what}: ${seq.failures} failures: ${seq.firstFailure}`);
  // Under load a refused connection is a result (the socket's MaxConnectionsPerSource=8 counts
  // the bridge as one source): counted and printed, not a reason to stop.
  const load = await runLoad(LOAD.requests, LOAD.concurrency, one);
  return { seq, load, pacedP50ms: median(paced), ...(cpuMs === undefined ? {} : { cpuMs }) };
}

/**
 * The floor: the image's own Lua and script started by systemd per connection with no sandbox,
 * reading the image mounted by the release's mount unit (paths prefixed by the mount point).
 */
async function installBare(board: Board, config: LhcConfig): Promise<void> {
  const rootMount = `/var/lib/lhc/${config.name}/root`;
  const exec = config.service.command.map((c, i) =>
    i === 0 || c.startsWith('/') ? rootMount + c : c,
  );
  const env = Object.entries(config.service.env ?? {}).map(([k, v]) =>
    v.startsWith('/') ? `Environment=${k}=${rootMount}${v}` : `Environment=${k}=${v}`,
  );
  const units: Record<string, string> = {
    'lhc-bare.socket': `[Socket]\nListenStream=${BARE_PORT}\nAccept=yes\n`,
    'lhc-bare@.service':
      `[Service]\nExecStart=${exec.join(' ')}\n${env.join('\n')}\n` +
      'StandardInput=socket\nStandardOutput=socket\nStandardError=journal\n',
  };
  for (const [name, text] of Object.entries(units))
    await writeFile(board.hostPath(`/etc/systemd/system/${name}`), text);
  await board.mustSh(['systemctl', 'daemon-reload'], 'systemctl daemon-reload');
  await board.mustSh(['systemctl', 'start', 'lhc-bare.socket'], 'starting the bare socket');
}

/** gophermoon with a deploy: section; undefined where this tree does not know the setting. */
async function deployConfig(dir: string, deploy: string): Promise<LhcConfig | undefined> {
  const file = copyGophermoonCheckout(dir);
  await writeFile(file, `${await readFile(file, 'utf8')}\ndeploy:\n${deploy}`);
  try {
    return await loadConfig(file);
  } catch {
    return undefined;
  }
}

function figures(name: string, f: PathFigures): Measurement[] {
  const rps = (r: LoadResult) => Math.round((r.requests / (r.wallMs / 1000)) * 10) / 10;
  return [
    { metric: `board ${name} p50`, value: Math.round(f.seq.p50ms), unit: 'ms' },
    { metric: `board ${name} p99`, value: Math.round(f.seq.p99ms), unit: 'ms' },
    { metric: `board ${name} paced p50`, value: Math.round(f.pacedP50ms), unit: 'ms' },
    ...(f.cpuMs === undefined
      ? []
      : [{ metric: `board ${name} cpu per request`, value: Math.round(f.cpuMs), unit: 'ms' }]),
    {
      metric: `board ${name} load ${LOAD.requests}@${LOAD.concurrency} throughput`,
      value: rps(f.load),
      unit: 'req/s',
    },
    {
      metric: `board ${name} load ${LOAD.requests}@${LOAD.concurrency} p50`,
      value: Math.round(f.load.p50ms),
      unit: 'ms',
    },
    {
      metric: `board ${name} load ${LOAD.requests}@${LOAD.concurrency} failures`,
      value: f.load.failures,
      unit: 'count',
    },
  ];
}

function ratio(name: string, f: PathFigures, bare: PathFigures): Measurement[] {
  const r = (a: number, b: number) => Math.round((a / b) * 100) / 100;
  return [
    { metric: `board ${name}/bare p50 ratio`, value: r(f.seq.p50ms, bare.seq.p50ms), unit: 'x' },
    {
      metric: `board ${name}-bare p50 difference`,
      value: Math.round(f.seq.p50ms - bare.seq.p50ms),
      unit: 'ms',
    },
    {
      metric: `board ${name}-bare paced p50 difference`,
      value: Math.round(f.pacedP50ms - bare.pacedP50ms),
      unit: 'ms',
    },
    ...(f.cpuMs === undefined || bare.cpuMs === undefined
      ? []
      : [
          {
            metric: `board ${name}-bare cpu per request difference`,
            value: Math.round(f.cpuMs - bare.cpuMs),
            unit: 'ms',
          },
        ]),
  ];
}

async function onBoard(ctx: BenchContext, board: Board, cpu?: CpuMeter): Promise<Measurement[]> {
  const logger = memoryLogger();
  const config = await loadConfig(copyGophermoonCheckout(path.join(ctx.workDir, 'nspawn-src')));
  ctx.log('building the gophermoon release (nspawn runtime)');
  const nspawnOut = await buildOut(config, path.join(ctx.workDir, 'nspawn'));
  await installOnBoard(board, nspawnOut.outDir, 'install', config);
  const port70 = await openBoardPort(board, 70, ctx.workDir, logger);
  const out: Measurement[] = [];
  try {
    ctx.log('bare: the image’s Lua per connection, no sandbox');
    await installBare(board, config);
    const barePort = await openBoardPort(board, BARE_PORT, ctx.workDir, logger);
    const bare = await measurePath(config, barePort, 'bare', cpu).finally(() => barePort.close());
    ctx.log('nspawn runtime');
    const nspawn = await measurePath(config, port70, 'nspawn', cpu);
    out.push(
      ...figures('bare', bare),
      ...figures('nspawn', nspawn),
      ...ratio('nspawn', nspawn, bare),
    );

    // The nspawn runtime without warm containers: each connection waits for its container.
    const coldConfig = await deployConfig(
      path.join(ctx.workDir, 'cold-src'),
      '  warm-containers: 0\n',
    );
    if (coldConfig) {
      ctx.log('building the release with deploy.warm-containers: 0 and upgrading the board to it');
      const coldOut = await buildOut(coldConfig, path.join(ctx.workDir, 'cold'));
      await installOnBoard(board, coldOut.outDir, 'upgrade', coldConfig);
      const cold = await measurePath(coldConfig, port70, 'nspawn-cold', cpu);
      out.push(...figures('nspawn-cold', cold), ...ratio('nspawn-cold', cold, bare));
      await installOnBoard(board, coldOut.outDir, 'uninstall', coldConfig);
    } else await installOnBoard(board, nspawnOut.outDir, 'uninstall', config);

    const sdConfig = await deployConfig(
      path.join(ctx.workDir, 'systemd-src'),
      '  runtime: systemd\n',
    );
    if (!sdConfig) {
      ctx.log('no deploy.runtime: systemd in this tree; skipping that runtime');
      return out;
    }
    ctx.log('building the gophermoon release (systemd runtime) and upgrading the board to it');
    const sdOut = await buildOut(sdConfig, path.join(ctx.workDir, 'systemd'));
    // As verify --board does: QEMU's JIT needs MemoryDenyWriteExecute=no on an emulating board.
    const emulation = await allowEmulation(board, sdConfig);
    if (emulation) ctx.log(emulation);
    await installOnBoard(board, sdOut.outDir, 'install', sdConfig);
    const sd = await measurePath(sdConfig, port70, 'systemd', cpu);
    out.push(...figures('systemd', sd), ...ratio('systemd', sd, bare));
    return out;
  } finally {
    await port70.close();
  }
}

export const boardSection: BenchSection = {
  name: 'board',
  async run(ctx) {
    const tarball = await testBoardTarball();
    ctx.log('booting the simulated board');
    const board = await Board.boot({
      tarball,
      workDir: path.join(ctx.workDir, 'board'),
      logger: memoryLogger(),
    });
    const cpu = await boardCpu(board, `lhc-bench-board-${process.pid}`);
    try {
      return await onBoard(ctx, board, cpu.meter);
    } finally {
      await board.poweroff();
      await cpu.remove();
    }
  },
};
