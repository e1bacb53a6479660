/**
 * verify: boot the packed image the way the board does and prove it answers and is hardened.
 *
 * The image is loop-mounted read-only, a noexec tmpfs seeded from the data template becomes the
 * data partition, and the container runs with the same nspawn command line as the deploy
 * bundle's unit (nspawnArgv with the board's hardening). inetd services get one container per
 * TCP connection through systemd-socket-activate (the board's Accept=yes .socket unit); a
 * `listen` service runs once and is reached inside its network namespace. Every probe goes
 * over a real socket and is compared byte for byte; the hardening is read from the live
 * payload's /proc. Whatever happens, the teardown leaves no mount, loop device or process.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile } from 'node:fs/promises';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { HardeningCheck, ProbeOutcome, VerifyReport } from '../build-result.js';
import type { LhcConfig } from '../config/load.js';
import type { Probe } from '../config/schema.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { run, start, tail, type Started } from '../tools/exec.js';
import { nspawnArgv } from '../tools/nspawn.js';
import {
  describeEndpoint,
  exchange,
  freePort,
  gopherRequest,
  gopherUrl,
  holdOpen,
  httpGet,
  type Endpoint,
} from '../verify/client.js';
import { checkNoInterpreters, inspectProcess, listImage } from '../verify/hardening.js';
import { runLoad, type LoadResult } from '../verify/load.js';
import { alive, findPayloads, type ProcInfo } from '../verify/proc.js';
import {
  containerProcesses,
  killPid,
  mountDataTmpfs,
  mountImageReadOnly,
  releaseLoop,
  removeWorkDir,
  unmount,
  unpackTemplate,
  type ImageMount,
} from '../verify/sandbox.js';
import { visibleDiff } from '../verify/visible-diff.js';
import { registerCleanup } from './cleanup.js';

export interface VerifyOptions {
  config: LhcConfig;
  /** The squashfs image to boot. */
  image: string;
  /** The data template (.tar.gz) that seeds the data partition. */
  dataTemplate: string;
  /** Load test: this many requests (default: none)... */
  requests?: number;
  /** ...with at most this many in flight (default 8). */
  concurrency?: number;
  logger: Logger;
  signal?: AbortSignal;
  /** Limit for the whole verify run, in milliseconds (default: none; each request has service.timeout). */
  timeoutMs?: number;
}

/** The report plus what the CLI prints beyond the shared VerifyReport shape. */
export interface VerifyOutcome extends VerifyReport {
  load?: NonNullable<VerifyReport['load']> & { firstFailure?: string; wallMs: number };
  /** The real-client check (curl) of the first probe; also among `probes`. */
  curl?: ProbeOutcome;
  /** Where the service was reached, e.g. 127.0.0.1:40123 or unix:/tmp/.../service.sock. */
  endpoint?: string;
  /** The first probe's answer from the booted image, byte for byte (e.g. for the demo to print). */
  sample?: { probe: string; body: Buffer };
  /** Last lines of the container's stderr (nspawn and the payload), when something failed. */
  serviceLog?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value, the time runs out (undefined) or the signal aborts. */
async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) return undefined;
    await sleep(20);
  }
}

/** The board's container command line for this image (the deploy unit uses the same builder). */
export function verifyNspawnArgv(config: LhcConfig, rootDir: string, dataDir: string): string[] {
  return nspawnArgv({
    root: rootDir,
    readOnly: true,
    harden: true,
    userNamespace: true,
    dataDir,
    dataPath: config.data.path,
    command: config.service.command,
    env: config.service.env,
    user: config.service.user,
    workdir: config.service.workdir,
  });
}

/** True when /proc/net/tcp{,6} text shows a LISTEN socket on `port` (any local address). */
export function listensOn(netTcp: string, port: number): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return netTcp.split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f[1]?.endsWith(`:${hexPort}`) === true && f[3] === '0A';
  });
}

async function readNetTcp(procDir: string): Promise<string> {
  const parts = await Promise.all(
    ['tcp', 'tcp6'].map((f) => readFile(`${procDir}/net/${f}`, 'utf8').catch(() => '')),
  );
  return parts.join('\n');
}

/** Bridges a Unix socket on the host to 127.0.0.1:PORT inside the container's network namespace. */
const FORWARDER = `
const net = require('net');
const [, sock, port] = process.argv;
net.createServer((c) => {
  const u = net.connect(Number(port), '127.0.0.1');
  c.pipe(u); u.pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(sock);
process.on('SIGTERM', () => process.exit(0));
`;

interface RunState {
  workDir: string;
  rootDir: string;
  dataDir: string;
  image?: ImageMount;
  dataMajorMinor?: string;
  service?: Started;
  forwarder?: Started;
  sockets: Set<net.Socket>;
  /** Payloads seen, so they can be killed even if nspawn died without taking them along. */
  payloads: ProcInfo[];
  serviceStderr?: string;
}

/** A started service and how to reach it. */
interface Running {
  endpoint: Endpoint;
  /** A live payload to inspect (for inetd: holds a connection open to get one). */
  payload(): Promise<ProcInfo | undefined>;
  /** argv for a real client, run on the host or inside the service's network namespace. */
  clientArgv(argv: string[]): { argv: string[]; privileged: boolean };
  /** Host and port the client argv should use. */
  clientTarget: { host: string; port: number };
}

async function startInetd(
  argv: string[],
  state: RunState,
  opts: VerifyOptions,
  timeoutMs: number,
): Promise<Running> {
  const { logger, signal } = opts;
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const service = start(
      ['systemd-socket-activate', '-l', `127.0.0.1:${port}`, '-a', '--inetd', ...argv],
      {
        privileged: true,
        logger,
        loud: attempt === 0,
      },
    );
    state.service = service;
    let exited = false;
    void service.exited.then(() => (exited = true));
    const ok = await waitFor(
      async () => (exited ? false : listensOn(await readNetTcp('/proc/self'), port) || undefined),
      10_000,
      signal,
    );
    if (ok) {
      const endpoint = { host: '127.0.0.1', port };
      return {
        endpoint,
        clientTarget: endpoint,
        clientArgv: (a) => ({ argv: a, privileged: false }),
        payload: async () => {
          // An accepted connection with no selector sent: the container waits on stdin.
          const before = new Set(findPayloads(service.pid).map((p) => p.pid));
          const sock = await holdOpen(endpoint, timeoutMs);
          state.sockets.add(sock);
          const p = await waitFor(
            () => findPayloads(service.pid).find((x) => !before.has(x.pid)),
            timeoutMs,
            signal,
          );
          if (p) state.payloads.push(p);
          return p;
        },
      };
    }
    await service.stop();
    lastError = tail((await service.exited).stderr, 5);
    state.service = undefined;
    if (!/Address already in use/.test(lastError)) break;
  }
  throw new UserError(`systemd-socket-activate did not start listening:\n${lastError}`);
}

async function startListening(
  argv: string[],
  state: RunState,
  opts: VerifyOptions,
  timeoutMs: number,
): Promise<Running> {
  const { logger, signal, config } = opts;
  const port = config.service.listen!;
  const service = start(argv, { privileged: true, logger, loud: true });
  state.service = service;
  let exited = false;
  void service.exited.then(() => (exited = true));
  const payload = await waitFor(
    () => (exited ? null : findPayloads(service.pid)[0]),
    timeoutMs,
    signal,
  );
  if (!payload) {
    const stderr = exited ? tail((await service.exited).stderr, 15) : '(still starting)';
    throw new UserError(
      `the container did not start its service ${config.service.command.join(' ')}:\n${stderr}`,
    );
  }
  state.payloads.push(payload);
  const listening = await waitFor(
    async () =>
      exited ? false : listensOn(await readNetTcp(`/proc/${payload.pid}`), port) || undefined,
    timeoutMs,
    signal,
  );
  if (!listening) {
    await service.stop();
    const stderr = tail((await service.exited).stderr, 15);
    throw new UserError(
      `the service did not listen on port ${port} inside the container within ${timeoutMs / 1000} s:\n${stderr}`,
    );
  }
  const sockPath = path.join(state.workDir, 'service.sock');
  const nsenter = (a: string[]) => ['nsenter', '-t', String(payload.pid), '-n', ...a];
  state.forwarder = start(nsenter([process.execPath, '-e', FORWARDER, sockPath, String(port)]), {
    privileged: true,
    logger,
  });
  if (!(await waitFor(() => existsSync(sockPath) || undefined, 10_000, signal))) {
    throw new UserError(
      `the forwarder into the container's network namespace did not start: ${state.forwarder.command}`,
    );
  }
  return {
    endpoint: { path: sockPath },
    clientTarget: { host: '127.0.0.1', port },
    clientArgv: (a) => ({ argv: nsenter(a), privileged: true }),
    payload: async () => (alive(payload) ? payload : undefined),
  };
}

async function readFixtures(probes: Probe[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const p of probes) {
    if (!p.fixture) continue;
    try {
      out.set(p.name, await readFile(p.fixture));
    } catch (e) {
      throw new UserError(
        `probe ${p.name}: cannot read fixture ${p.fixture}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      );
    }
  }
  return out;
}

/** Checks one answer; undefined when right, else a readable reason (a visible diff for bodies). */
function judge(
  probe: Probe,
  expected: Buffer | undefined,
  got: { status?: number; body: Buffer },
  via: string,
): string | undefined {
  const problems: string[] = [];
  if (probe.type === 'http' && got.status !== probe.status)
    problems.push(`HTTP status ${got.status}, expected ${probe.status}`);
  if (expected) {
    const diff = visibleDiff(expected, got.body, {
      expected: `fixture ${probe.fixture}`,
      actual: `response (${via})`,
    });
    if (diff) problems.push(diff);
  }
  return problems.length ? problems.join('\n') : undefined;
}

async function ask(
  probe: Probe,
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ status?: number; body: Buffer }> {
  if (probe.type === 'gopher')
    return { body: await exchange(endpoint, gopherRequest(probe.selector), { timeoutMs, signal }) };
  return httpGet(endpoint, probe.path, { timeoutMs, signal });
}

async function probeOnce(
  probe: Probe,
  expected: Buffer | undefined,
  endpoint: Endpoint,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ outcome: ProbeOutcome; body?: Buffer }> {
  try {
    const got = await ask(probe, endpoint, timeoutMs, signal);
    const problem = judge(probe, expected, got, describeEndpoint(endpoint));
    return {
      outcome: {
        name: probe.name,
        ok: problem === undefined,
        diff: problem,
        bytes: got.body.length,
      },
      body: got.body,
    };
  } catch (e) {
    signal?.throwIfAborted();
    return {
      outcome: {
        name: probe.name,
        ok: false,
        diff: `no answer: ${(e as Error).message}`,
        bytes: 0,
      },
    };
  }
}

/** The first probe once more through a real client (curl), the way a user would fetch it. */
async function curlProbe(
  probe: Probe,
  expected: Buffer | undefined,
  svc: Running,
  state: RunState,
  opts: VerifyOptions,
  timeoutMs: number,
): Promise<ProbeOutcome> {
  const { host, port } = svc.clientTarget;
  const name = `${probe.name} (curl)`;
  const seconds = String(Math.ceil(timeoutMs / 1000));
  const bodyFile = path.join(state.workDir, 'curl-body');
  const url =
    probe.type === 'gopher'
      ? gopherUrl(host, port, probe.selector)
      : `http://${host}:${port}${probe.path}`;
  const curl = [
    'curl',
    '-sS',
    '--max-time',
    seconds,
    '-o',
    bodyFile,
    ...(probe.type === 'http' ? ['-w', '%{http_code}'] : []),
    url,
  ];
  const { argv, privileged } = svc.clientArgv(curl);
  const r = await run(argv, {
    privileged,
    logger: opts.logger,
    reject: false,
    signal: opts.signal,
    timeoutMs: timeoutMs + 5_000,
  });
  if (r.exitCode !== 0)
    return {
      name,
      ok: false,
      diff: `${r.command} failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
      bytes: 0,
    };
  const body = await readFile(bodyFile);
  const status = probe.type === 'http' ? Number(r.stdout.trim()) : undefined;
  const problem = judge(probe, expected, { status, body }, 'curl');
  return { name, ok: problem === undefined, diff: problem, bytes: body.length };
}

async function hardeningRows(
  svc: Running,
  state: RunState,
  config: LhcConfig,
): Promise<HardeningCheck[]> {
  const rows: HardeningCheck[] = [];
  const payload = await svc.payload();
  if (!payload) {
    rows.push({
      name: 'container payload running',
      ok: false,
      detail: 'no payload process appeared under systemd-nspawn',
    });
  } else {
    rows.push(...(await inspectProcess(payload.pid, config.data.path)));
  }
  for (const s of state.sockets) s.destroy();
  state.sockets.clear();
  rows.push(checkNoInterpreters(await listImage(state.rootDir), config.service.command[0]!));
  return rows;
}

/** Tears everything down; safe to call twice and after a partial set-up. */
async function teardown(state: RunState, image: string, logger: Logger): Promise<void> {
  for (const s of state.sockets) s.destroy();
  state.sockets.clear();
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`);
    }
  };
  // A payload orphaned by a SIGKILLed nspawn keeps the activator's stderr pipe open, so waiting
  // for the activator to "exit" would wait for the payload: bound every wait, sweep, wait again.
  const bounded = (p: Promise<unknown>, ms: number) => Promise.race([p, sleep(ms)]);
  const stopping = Promise.all([state.forwarder?.stop(), state.service?.stop()]);
  await attempt('stop service', async () => void (await bounded(stopping, 1_000)));
  // nspawn killed hard (SIGKILL, e.g. by killAllGroups) leaves its payload running in its own
  // pid namespace: kill what we saw, then anything whose root is still our image.
  await attempt('kill payloads', async () => {
    for (const p of state.payloads) if (alive(p)) await killPid(p.pid);
    if (state.image) {
      for (let round = 0; round < 50; round++) {
        const left = await containerProcesses(state.image.majorMinor);
        if (left.length === 0) return;
        for (const pid of left) await killPid(pid);
        await sleep(100);
      }
      throw new Error(
        `container processes still running: ${(await containerProcesses(state.image.majorMinor)).join(' ')}`,
      );
    }
  });
  await attempt('stop service', async () => void (await bounded(stopping, 5_000)));
  await attempt('collect service log', async () => {
    const exited = state.service?.exited;
    if (!exited) return;
    const r = await Promise.race([exited, sleep(5_000).then(() => undefined)]);
    if (r === undefined) throw new Error(`${state.service!.command} did not exit`);
    state.serviceStderr = r.stderr;
  });
  await attempt('unmount data', () => unmount(state.dataDir, logger));
  await attempt('unmount image', () => unmount(state.rootDir, logger));
  if (state.image) {
    const dev = state.image.loopDevice;
    await attempt('release loop device', () => releaseLoop(dev, image, logger));
  }
  await attempt('remove work dir', () =>
    removeWorkDir(state.workDir, [state.rootDir, state.dataDir]),
  );
  if (problems.length) throw new Error(`verify cleanup incomplete:\n${problems.join('\n')}`);
}

function combinedSignal(opts: VerifyOptions): AbortSignal | undefined {
  const signals = [
    opts.signal,
    opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined,
  ].filter((s): s is AbortSignal => s !== undefined);
  return signals.length ? AbortSignal.any(signals) : undefined;
}

async function mustExist(file: string, what: string): Promise<string> {
  const abs = path.resolve(file);
  if (!existsSync(abs)) throw new UserError(`${what} ${file} does not exist`);
  return abs;
}

export async function verifyImage(options: VerifyOptions): Promise<VerifyOutcome> {
  const { config, logger } = options;
  const image = await mustExist(options.image, 'image');
  const dataTemplate = await mustExist(options.dataTemplate, 'data template');
  const signal = combinedSignal(options);
  const opts = { ...options, signal };
  const fixtures = await readFixtures(config.probes);
  const timeoutMs = config.service.timeout * 1000;
  const requests = options.requests ?? 0;
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(requests) || requests < 0)
    throw new UserError(`--requests must be a whole number ≥ 0, got ${requests}`);
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UserError(`--concurrency must be a whole number ≥ 1, got ${concurrency}`);

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'lhc-verify-'));
  // The directory name becomes the machine name (and hostname): use the service's name.
  const state: RunState = {
    workDir,
    rootDir: path.join(workDir, config.name),
    dataDir: path.join(workDir, 'data'),
    sockets: new Set(),
    payloads: [],
  };
  await mkdir(state.rootDir);
  await mkdir(state.dataDir);
  const cleanup = registerCleanup(`verify ${config.name} (${workDir})`, () =>
    teardown(state, image, logger),
  );

  let outcome: VerifyOutcome | undefined;
  let failure: unknown;
  let failed = false;
  try {
    outcome = await logger.group(`verify ${config.name}`, async () => {
      state.image = await mountImageReadOnly(image, state.rootDir, logger);
      logger.info(
        `image ${image} mounted read-only at ${state.rootDir} (${state.image.loopDevice})`,
      );
      for (const needed of ['/usr', config.data.path]) {
        if (!existsSync(path.join(state.rootDir, needed))) {
          throw new UserError(
            `the image has no ${needed} directory; a read-only root needs every mount point (add it to the root)`,
          );
        }
      }
      state.dataMajorMinor = await mountDataTmpfs(state.dataDir, logger);
      await unpackTemplate(dataTemplate, state.dataDir);
      logger.info(`data template ${dataTemplate} unpacked into a noexec,nosuid,nodev tmpfs`);

      const argv = verifyNspawnArgv(config, state.rootDir, state.dataDir);
      const svc = config.service.inetd
        ? await startInetd(argv, state, opts, timeoutMs)
        : await startListening(argv, state, opts, timeoutMs);
      logger.info(`service reachable at ${describeEndpoint(svc.endpoint)}`);

      const probes: ProbeOutcome[] = [];
      let sample: VerifyOutcome['sample'];
      for (const p of config.probes) {
        const { outcome: r, body } = await probeOnce(
          p,
          fixtures.get(p.name),
          svc.endpoint,
          timeoutMs,
          signal,
        );
        logger.info(`probe ${p.name}: ${r.ok ? 'ok' : 'FAILED'} (${r.bytes} bytes)`);
        probes.push(r);
        if (!sample && body) sample = { probe: p.name, body };
      }
      const curl = await curlProbe(
        config.probes[0]!,
        fixtures.get(config.probes[0]!.name),
        svc,
        state,
        opts,
        timeoutMs,
      );
      logger.info(`real client: ${curl.name}: ${curl.ok ? 'ok' : 'FAILED'}`);
      probes.push(curl);

      const hardening = await hardeningRows(svc, state, config);
      for (const h of hardening)
        logger.info(`hardening: ${h.ok ? 'ok ' : 'FAIL'} ${h.name}: ${h.detail}`);

      let load: LoadResult | undefined;
      if (requests > 0) {
        const gopher = config.probes.filter((p) => p.type === 'gopher');
        const targets = gopher.length ? gopher : config.probes;
        logger.info(
          `load: ${requests} requests at concurrency ${concurrency} over ${targets.map((p) => p.name).join(', ')}`,
        );
        load = await runLoad(
          requests,
          concurrency,
          async (i) => {
            const p = targets[i % targets.length]!;
            return judge(
              p,
              fixtures.get(p.name),
              await ask(p, svc.endpoint, timeoutMs, signal),
              describeEndpoint(svc.endpoint),
            );
          },
          signal,
        );
        logger.info(
          `load: ${load.failures} failures; p50 ${load.p50ms} ms, p95 ${load.p95ms} ms, p99 ${load.p99ms} ms`,
        );
      }
      const ok =
        probes.every((p) => p.ok) && hardening.every((h) => h.ok) && (load?.failures ?? 0) === 0;
      return {
        ok,
        probes,
        hardening,
        curl,
        sample,
        endpoint: describeEndpoint(svc.endpoint),
        load: load && {
          requests: load.requests,
          concurrency: load.concurrency,
          failures: load.failures,
          p50ms: load.p50ms,
          p95ms: load.p95ms,
          p99ms: load.p99ms,
          firstFailure: load.firstFailure,
          wallMs: Math.round(load.wallMs),
        },
      };
    });
  } catch (e) {
    failed = true;
    failure = e;
  }
  // Not in a finally: a cleanup problem must not hide the error that got us here.
  let cleanupError: unknown;
  try {
    await cleanup.run();
  } catch (e) {
    cleanupError = e;
  }
  if (failed) {
    if (cleanupError) logger.warn((cleanupError as Error).message);
    if (signal?.aborted && !options.signal?.aborted) {
      throw new UserError(`verify timed out after ${(options.timeoutMs ?? 0) / 1000} s`, {
        cause: failure,
      });
    }
    throw failure;
  }
  if (cleanupError) throw cleanupError;
  if (!outcome) throw new Error('verify produced no outcome');
  if (!outcome.ok && state.serviceStderr) outcome.serviceLog = serviceLog(state.serviceStderr);
  return outcome;
}

/** The container's stderr without systemd-socket-activate's per-connection chatter. */
export function serviceLog(stderr: string, lines = 30): string {
  // systemd 252 nspawn prints the "propagate" line whenever a read-only-root container exits: harmless.
  const noise =
    /^(Listening on |Communication attempt on fd|Connection from |Spawned |Execing |Child \d+ died with code 0$|Attempted to remove disk file system under "\/run\/systemd\/nspawn\/propagate\/)/;
  return tail(
    stderr
      .split('\n')
      .filter((l) => !noise.test(l))
      .join('\n'),
    lines,
  );
}
