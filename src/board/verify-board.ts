/**
 * verify --board: the release as a person deploys it, on a simulated board. The build output is
 * copied onto a booted systemd machine (machine.ts), `deploy/install.sh install` runs there, and
 * every probe goes to the board's real listening port (the socket unit systemd holds) and is
 * compared byte for byte with its fixture. The hardening rows are read from the live container
 * the board started for a connection. On failure the board's journal for the bundle's units is
 * part of the report; the board is powered off and leaves nothing behind either way.
 */
import { artifactNames } from '../stages/pack.js';
import type { RunAs } from '../service-user/passwd.js';
import { readRunAsFromImage } from '../stages/service-user.js';
import { mkdtemp, rm } from 'node:fs/promises';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { HardeningCheck, ProbeOutcome, VerifyReport } from '../build-result.js';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { listenPort, serviceUnitName } from '../deploy/systemd.js';
import { start, tail, type Started } from '../tools/exec.js';
import { holdOpen, type Endpoint } from '../harness/client.js';
import { inspectProcess } from '../verify/hardening.js';
import { alive, findPayloads, type ProcInfo } from '../harness/proc.js';
import { curlable, judge, probeOnce, readFixtures } from '../verify/probes.js';
import { waitFor } from '../core/wait.js';
import { listensOn, readNetTcp } from '../harness/listen.js';
import { FORWARDER, forwarderReady } from '../harness/service.js';
import { hostArch } from '../core/arch.js';
import { Board } from './machine.js';
import { findServicePayloads } from './service-procs.js';
import { boardRootTarball, type BoardRootSource } from './root.js';

/** Where the build output lands on the board, as if copied there by scp. */
export const BOARD_OUT_DIR = '/root/lhc-out';

export interface BoardVerifyOptions {
  config: LhcConfig;
  /** The build output directory: SHA256SUMS, the artifacts and deploy/. */
  outDir: string;
  logger: Logger;
  signal?: AbortSignal;
  /** A board root the user provides; default the cached mmdebstrap one. */
  board?: BoardRootSource;
  /** Scratch directory for the board's root; default a new one under the system temp dir. */
  workDir?: string;
  /** Per-request limit in milliseconds; default service.timeout. */
  requestTimeoutMs?: number;
}

export interface BoardVerifyReport extends VerifyReport {
  /** Journal lines of the bundle's units (and any failed unit), when something failed. */
  journal?: string;
  /** Where the simulated board differs from the real one (e.g. the emulation drop-in). */
  notes?: string[];
  timings: {
    rootSeconds: number;
    bootSeconds: number;
    installSeconds: number;
    /** Milliseconds per probe, in config order. */
    probeMs: number[];
  };
}

/** The drop-in a simulated board adds when it emulates the payload (see allowEmulation()). */
export const EMULATION_DROP_IN = 'lhc-emulation.conf';

/**
 * The systemd runtime's MemoryDenyWriteExecute=yes stops QEMU user-mode, whose JIT needs
 * writable executable memory. The real board runs the payload natively and keeps it; a simulated
 * board of another architecture lifts it for the service unit only, with a drop-in, and says so.
 * Returns that message, or undefined when nothing was changed.
 */
export async function allowEmulation(board: Board, config: LhcConfig): Promise<string | undefined> {
  if (config.deploy.runtime !== 'systemd' || sameArch(config.arch, hostArch())) return undefined;
  const unit = serviceUnitName({ ...config, runtime: config.deploy.runtime });
  const dir = `/etc/systemd/system/${unit}.d`;
  await board.mustSh(
    [
      'sh',
      '-c',
      `mkdir -p '${dir}' && printf '[Service]\\nMemoryDenyWriteExecute=no\\n' > '${dir}/${EMULATION_DROP_IN}'`,
    ],
    'writing the emulation drop-in',
  );
  return `board: ${config.arch} payload emulated by QEMU on ${hostArch()}: ${unit} runs with MemoryDenyWriteExecute=no (drop-in ${EMULATION_DROP_IN}); the ${config.arch} board keeps =yes`;
}

function sameArch(a: string, b: string): boolean {
  const norm = (x: string) => (x === 'arm64' ? 'aarch64' : x === 'amd64' ? 'x86_64' : x);
  return norm(a) === norm(b);
}

/** Unit name patterns whose journal explains a failure of this service on the board. */
export function serviceUnitPatterns(config: LhcConfig): string[] {
  const n = config.name;
  return [`${n}.socket`, `${n}@*.service`, `${n}.service`, `${n}-proxy.service`, '*.mount'];
}

/** Copies the build output to the board and runs `sh deploy/install.sh COMMAND` there. */
export async function installOnBoard(
  board: Board,
  outDir: string,
  command: 'install' | 'upgrade' | 'rollback' | 'uninstall',
  config: LhcConfig,
): Promise<{ seconds: number; output: string }> {
  const t = Date.now();
  if (command === 'install' || command === 'upgrade') await board.copyIn(outDir, BOARD_OUT_DIR);
  const r = await board.sh(['sh', '-c', `cd ${BOARD_OUT_DIR} && sh deploy/install.sh ${command}`], {
    timeoutMs: 180_000,
  });
  if (r.exitCode !== 0) {
    const journal = await board.journal(serviceUnitPatterns(config));
    throw new UserError(
      `deploy/install.sh ${command} failed on the board (exit ${r.exitCode}):\n` +
        `${tail(r.stdout + r.stderr, 30)}\n${journal}`,
    );
  }
  return { seconds: (Date.now() - t) / 1000, output: r.stdout + r.stderr };
}

/** The board's listening port, reached from the host through a Unix socket bridged into its network. */
export interface BoardPort {
  endpoint: Endpoint;
  close(): Promise<void>;
}

export async function openBoardPort(
  board: Board,
  port: number,
  dir: string,
  logger: Logger,
  signal?: AbortSignal,
): Promise<BoardPort> {
  const listening = await waitFor(
    async () => listensOn((await readNetTcp(`/proc/${board.pid}`)) ?? '', port) || undefined,
    30_000,
    signal,
  );
  if (!listening)
    throw new UserError(
      `nothing listens on the board's port ${port} after install:\n${await board.journal([])}`,
    );
  const sock = path.join(dir, `board-${port}.sock`);
  const forwarder: Started = start(
    board.inNetwork([process.execPath, '-e', FORWARDER, sock, String(port)]),
    { privileged: true, logger },
  );
  if (!(await waitFor(() => forwarderReady(sock) || undefined, 10_000, signal))) {
    await forwarder.stop();
    throw new UserError(`the bridge into the board's network did not start: ${forwarder.command}`);
  }
  return { endpoint: { path: sock }, close: () => forwarder.stop() };
}

/** Every probe once over the board's port, judged against its fixture, with its latency. */
export async function probeBoard(
  config: LhcConfig,
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ outcomes: ProbeOutcome[]; ms: number[] }> {
  const fixtures = await readFixtures(config.probes);
  const outcomes: ProbeOutcome[] = [];
  const ms: number[] = [];
  for (const p of config.probes) {
    const t = performance.now();
    const { outcome } = await probeOnce(p, fixtures.get(p.name), endpoint, timeoutMs, signal);
    ms.push(performance.now() - t);
    outcomes.push(outcome);
  }
  return { outcomes, ms };
}

/** The first gopher or http probe fetched with curl on the board itself, against the board's own 127.0.0.1. */
export async function curlOnBoard(
  board: Board,
  config: LhcConfig,
): Promise<ProbeOutcome | undefined> {
  const probe = curlable(config.probes);
  if (!probe) return undefined;
  const port = listenPort(config.service);
  const url =
    probe.type === 'gopher'
      ? `gopher://127.0.0.1:${port}/1${encodeURI(probe.selector)}`
      : `http://127.0.0.1:${port}${probe.path}`;
  const fixtures = await readFixtures([probe]);
  const r = await board.sh([
    'curl',
    '-sS',
    '--max-time',
    '30',
    ...(probe.type === 'http' ? ['-i'] : []),
    url,
  ]);
  const name = `${probe.name} (curl on the board)`;
  if (r.exitCode !== 0)
    return { name, ok: false, diff: `curl ${url} failed: ${r.stderr.trim()}`, bytes: 0 };
  let body = r.stdoutBytes;
  let status: number | undefined;
  if (probe.type === 'http') {
    const end = body.indexOf('\r\n\r\n');
    status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(body.subarray(0, end).toString('latin1'))?.[1]);
    body = body.subarray(end + 4);
  }
  const problem = judge(probe, fixtures.get(probe.name), { status, body }, 'curl on the board');
  return { name, ok: problem === undefined, diff: problem, bytes: body.length };
}

/**
 * The hardening rows of a live container on the board: for an inetd service, the one started
 * for a connection held open (sending nothing, so it waits on stdin); for a listening service,
 * the running daemon.
 */
export async function boardHardening(
  board: Board,
  config: LhcConfig,
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
  runAs?: RunAs,
): Promise<HardeningCheck[]> {
  const sandboxed = config.deploy.runtime === 'systemd';
  const payloads = () =>
    sandboxed ? findServicePayloads(board.pid, config.name) : findPayloads(board.pid);
  let held: net.Socket | undefined;
  try {
    let payload: ProcInfo | undefined;
    if (config.service.inetd) {
      const before = new Set(payloads().map((p) => p.pid));
      held = await holdOpen(endpoint, timeoutMs);
      payload = await waitFor(() => payloads().find((p) => !before.has(p.pid)), timeoutMs, signal);
    } else payload = await waitFor(() => payloads()[0], timeoutMs, signal);
    if (!payload || !alive(payload))
      return [
        {
          name: 'a live container on the board',
          ok: false,
          detail: 'no container process found under the board',
        },
      ];
    return await inspectProcess(
      payload.pid,
      config.data.path,
      undefined,
      runAs,
      sandboxed ? 'unprivileged-user' : 'user-namespace',
    );
  } finally {
    held?.destroy();
  }
}

export async function verifyOnBoard(o: BoardVerifyOptions): Promise<BoardVerifyReport> {
  const { config, logger, signal } = o;
  const timeoutMs = o.requestTimeoutMs ?? config.service.timeout * 1000;
  const t = Date.now();
  const tarball = await boardRootTarball({ logger, signal, provided: o.board ?? config.board });
  const rootSeconds = (Date.now() - t) / 1000;
  const ownWorkDir = o.workDir === undefined;
  const workDir = o.workDir ?? (await mkdtemp(path.join(os.tmpdir(), 'lhc-board-')));
  const board = await Board.boot({
    tarball,
    workDir: path.join(workDir, 'board'),
    logger,
    signal,
  }).catch(async (e: unknown) => {
    if (ownWorkDir) await rm(workDir, { recursive: true, force: true });
    throw e;
  });
  let port: BoardPort | undefined;
  let report: BoardVerifyReport | undefined;
  try {
    const emulation = await allowEmulation(board, config);
    if (emulation) logger.info(emulation);
    const install = await installOnBoard(board, o.outDir, 'install', config);
    logger.info(`installed on the board in ${install.seconds.toFixed(1)} s`);
    port = await openBoardPort(board, listenPort(config.service), workDir, logger, signal);
    const { outcomes, ms } = await probeBoard(config, port.endpoint, timeoutMs, signal);
    const curl = await curlOnBoard(board, config);
    if (curl) outcomes.push(curl);
    // service.user's ids as the image's lhc-run-as carries them (the image has no passwd).
    const image = path.join(
      o.outDir,
      artifactNames(config.name, { image: config.outputs.image }).image,
    );
    const runAs = await readRunAsFromImage(config, image, logger);
    const hardening = await boardHardening(board, config, port.endpoint, timeoutMs, signal, runAs);
    const ok = outcomes.every((p) => p.ok) && hardening.every((h) => h.ok);
    report = {
      ok,
      probes: outcomes,
      hardening,
      ...(emulation ? { notes: [emulation] } : {}),
      timings: {
        rootSeconds,
        bootSeconds: board.bootSeconds,
        installSeconds: install.seconds,
        probeMs: ms,
      },
    };
    if (!ok) report.journal = await board.journal(serviceUnitPatterns(config));
    return report;
  } finally {
    await port?.close();
    await board.poweroff();
    // Only the bridge's socket is left in it once the board's root is gone.
    if (ownWorkDir) await rm(workDir, { recursive: true, force: true });
  }
}

export function formatBoardReport(r: BoardVerifyReport): string[] {
  const lines: string[] = [...(r.notes ?? [])];
  for (const p of r.probes)
    lines.push(
      `${p.ok ? 'ok  ' : 'FAIL'} probe ${p.name} (${p.bytes} bytes)${p.diff ? `\n${p.diff}` : ''}`,
    );
  for (const h of r.hardening) lines.push(`${h.ok ? 'ok  ' : 'FAIL'} ${h.name}: ${h.detail}`);
  const sorted = [...r.timings.probeMs].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
  lines.push(
    `board: root ${r.timings.rootSeconds.toFixed(1)} s, boot ${r.timings.bootSeconds.toFixed(1)} s, ` +
      `install ${r.timings.installSeconds.toFixed(1)} s, probe median ${median.toFixed(0)} ms`,
  );
  if (r.journal) lines.push('journal of the failed and the service units on the board:', r.journal);
  lines.push(r.ok ? 'board verify: ok' : 'board verify: FAILED');
  return lines;
}
