/**
 * Running the probes against a root in systemd-nspawn, the way the traced run and the self-check
 * both do: inetd services get each gopher request on stdin in a fresh container; a listening
 * service is started once and reached through a forwarder inside the container's network
 * namespace (nsenter -n), so the container itself never gets a network. Either way the probe
 * goes through the one probe client (./client.ts askProbe), as verify's do. A hook (the tracer) may add nspawn
 * binds and environment and wrap each run's argv; it hands back what it recorded.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import type { Probe } from '../config/schema.js';
import { ToolError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { registerCleanup } from '../core/cleanup.js';
import { mapBounded, probeParallelism } from '../core/parallel.js';
import { sleep } from '../core/wait.js';
import { run, start, tail, type RunResult, type Started } from '../tools/exec.js';
import { nspawnArgv } from '../tools/nspawn.js';
import { ACCEPT_COMM } from '../accept/accept-elf.js';
import { qemuExitStatus } from '../trace/parse-strace.js';
import {
  askProbe,
  ExchangeTimeout,
  stdioExchange,
  type Endpoint,
  type ProbeResponse,
} from './client.js';
import { containerIdentity, releaseMachineName } from './machine-name.js';
import { listening } from './listen.js';
import { alive, findPayloads, readProc, type ProcInfo } from './proc.js';
import { forwarderUp, startActivator, startForwarder } from './service.js';
import type { RunAs } from '../service-user/passwd.js';

/** Where one set of probe runs happens. */
export interface RunTarget {
  root: string;
  /** The run's machine name and hostname (see harness/machine-name.ts); parallel containers add a suffix. */
  identity?: { machineName: string; hostname: string };
  dataDir: string;
  readOnly: boolean;
  harden: boolean;
  /** service.user's ids, dropped to by the root's lhc-run-as (see stages/service-user.ts). */
  runAs?: RunAs;
}

/** What one container run recorded: its raw text, and the file it lives in when there is one. */
export interface HookRecord {
  text: string;
  file?: string;
}

/** Wraps container runs (the tracer); the self-check passes none. */
export interface RunHook {
  /** Environment of run `index` (undefined: the one run of a listening service). */
  env?(index: number | undefined): Record<string, string>;
  binds?: { host: string; container: string }[];
  /** Called once before `count` inetd runs (indices 0..count-1), for set-up they can share. */
  prepare?(count: number): Promise<void>;
  /**
   * Instead of prepare(): inetd probes through `count` long-lived containers (indices
   * 0..count-1) that serve one connection after another (runInetdPooled). Sets up what they
   * share and returns the container path of an lhc-accept built for this host. Only hooks whose
   * begin() can cut() have it.
   */
  pool?(count: number): Promise<string>;
  /** Called before each container run (`index` per inetd probe, undefined for a listening run). */
  begin(
    argv: string[],
    index: number | undefined,
  ): Promise<{
    argv: string[];
    end(): Promise<HookRecord>;
    /** What was recorded since the previous cut, once its processes are gone; the run goes on. */
    cut?(): Promise<HookRecord>;
  }>;
}

export interface ProbeRun {
  responses: Record<string, ProbeResponse>;
  /** What the hook recorded, one entry per container run. */
  records: HookRecord[];
}

export interface RunOptions {
  workDir: string;
  logger: Logger;
  signal?: AbortSignal;
  hook?: RunHook;
  /** Probes in flight at once (default: one per core); 1 runs them one after another. */
  parallel?: number;
}

function containerArgv(
  config: LhcConfig,
  t: RunTarget,
  hook: RunHook | undefined,
  index: number | undefined,
  identity: { machineName: string; hostname: string },
  extra: { launcher?: readonly string[]; asPid2?: boolean } = {},
): string[] {
  return nspawnArgv({
    ...extra,
    root: t.root,
    command: config.service.command,
    readOnly: t.readOnly,
    dataDir: t.dataDir,
    dataPath: config.data.path,
    binds: hook?.binds ?? [],
    env: { ...config.service.env, ...hook?.env?.(index) },
    ...(t.runAs ? { runAs: t.runAs } : {}),
    ...(config.service.workdir ? { workdir: config.service.workdir } : {}),
    harden: t.harden,
    privateNetwork: true,
    ...identity,
  });
}

async function begin(
  config: LhcConfig,
  t: RunTarget,
  o: RunOptions,
  index: number | undefined,
  identity: { machineName: string; hostname: string },
) {
  const argv = containerArgv(config, t, o.hook, index, identity);
  if (!o.hook) return { argv, end: async (): Promise<HookRecord | undefined> => undefined };
  return o.hook.begin(argv, index);
}

function crashError(
  config: LhcConfig,
  what: string,
  exitCode: number | undefined,
  stderr: string,
  hint = '',
): UserError {
  const code = exitCode === undefined ? 'was killed' : `exited with code ${exitCode}`;
  return new UserError(
    `service '${config.name}' (${config.service.command.join(' ')}) ${code} ${what}` +
      (stderr.trim() ? `; last lines of its stderr:\n${tail(stderr, 15)}` : ' (no stderr output)') +
      hint,
  );
}

function timeoutError(config: LhcConfig, what: string, stderrTail: string | undefined): UserError {
  return new UserError(
    `service '${config.name}' did not finish ${what} within service.timeout (${config.service.timeout} s)` +
      (stderrTail ? `; last lines of its stderr:\n${stderrTail}` : ''),
  );
}

async function withTimeout<T>(config: LhcConfig, what: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof ToolError && e.reason.startsWith('timed out'))
      throw timeoutError(config, what, e.stderrTail);
    throw e;
  }
}

/** Exit codes that end an inetd connection normally (service.success-exit-status). */
function normalExit(config: LhcConfig, exitCode: number | undefined): boolean {
  const normal = [0, ...(config.service['success-exit-status'] ?? [])];
  return exitCode !== undefined && normal.includes(exitCode);
}

/** The crash of an inetd connection: its exit code, stderr, and the success-exit-status hint. */
function inetdCrash(
  config: LhcConfig,
  probeName: string,
  exitCode: number | undefined,
  stderr: string,
): UserError {
  // nspawn passes the payload's own exit code on; an inetd server may end that way on purpose.
  const hint =
    exitCode !== undefined && exitCode > 0 && exitCode < 256
      ? `\nIf exit code ${exitCode} is how this service normally ends a connection, list it in ` +
        `service.success-exit-status (e.g. success-exit-status: [${exitCode}]).`
      : '';
  return crashError(config, `while answering probe '${probeName}'`, exitCode, stderr, hint);
}

function checkInetdExit(config: LhcConfig, probeName: string, r: RunResult): void {
  if (!normalExit(config, r.exitCode)) throw inetdCrash(config, probeName, r.exitCode, r.stderr);
}

async function runInetd(
  config: LhcConfig,
  t: RunTarget,
  identity: { machineName: string; hostname: string },
  o: RunOptions,
): Promise<ProbeRun> {
  const pool = o.hook?.pool;
  if (o.hook && pool)
    return runInetdPooled(config, t, identity, o, o.hook, (n) => pool.call(o.hook, n));
  const timeoutMs = config.service.timeout * 1000;
  // Kept by probe index, so that a parallel run reports exactly what a sequential one does.
  const records: (HookRecord | undefined)[] = [];
  await o.hook?.prepare?.(config.probes.length);
  const responses = await mapBounded(config.probes, parallelism(o), async (probe, i) => {
    // One container per probe, the request on its stdin, as the board's Accept=yes socket does.
    const stdio = async (request: Buffer): Promise<Buffer> => {
      // Containers running at once must not share a machine name (nspawn keys host state by it);
      // the hostname stays the run's, so a service printing it answers the same in every run.
      const own = { ...identity, machineName: `${identity.machineName}-${i}` };
      const { argv, end } = await begin(config, t, o, i, own);
      let r: RunResult;
      try {
        r = await withTimeout(
          config,
          `probe '${probe.name}'`,
          run(argv, {
            privileged: true,
            input: request,
            binary: true,
            reject: false,
            timeoutMs,
            logger: o.logger,
            // nspawn locks a writable root against a second container; the parallel traced
            // runs share one on purpose (each probe is its own run, as on the board). A
            // read-only root gets a shared lock, but a container ending takes it exclusively for
            // a moment to decide whether to delete the lock file, and one starting then fails
            // with "Directory tree … is currently busy" (a parallel self-check did in CI). The
            // roots are lhc's own: no run needs the lock.
            env: { SYSTEMD_NSPAWN_LOCK: '0' },
            ...(o.signal ? { signal: o.signal } : {}),
          }),
        );
      } finally {
        records[i] = await end();
        await releaseMachineName(own.machineName);
      }
      checkInetdExit(config, probe.name, r);
      return r.stdoutBytes;
    };
    return askProbe(probe, { stdio }, { timeoutMs, signal: o.signal });
  });
  return {
    responses: Object.fromEntries(config.probes.map((p, i) => [p.name, responses[i]!])),
    records: records.filter((r): r is HookRecord => r !== undefined),
  };
}

/** One long-lived container of runInetdPooled, behind its activator's host port. */
interface PooledContainer {
  service: Started;
  port: number;
  machineName: string;
  cut(): Promise<HookRecord>;
  end(): Promise<HookRecord>;
  /** Its stderr lines so far (the activator's, nspawn's and every connection's). */
  stderr: string[];
  /** The probe it served last, which any trace left at the end belongs to. */
  lastProbe?: number;
  /** Its lhc-accept on the host, once found. */
  accept?: ProcInfo;
}

/**
 * The activator's own lines about starting the container, and nspawn's about our stopping it
 * (to have all of a crashed connection's stderr): not the service's.
 */
const ACTIVATOR_NOISE =
  /^(Listening on |Communication attempt on fd|Execing |Container \S+ terminated by signal KILL\.$)/;

/** What a pooled container wrote to stderr since line `from`, without the activator's lines. */
function stderrSince(c: PooledContainer, from: number): string {
  return c.stderr
    .slice(from)
    .filter((l) => !ACTIVATOR_NOISE.test(l))
    .join('\n');
}

/** Children of `pid` (of every thread of it), from /proc: no scan of the whole process table. */
function childPids(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const t of tasks) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8');
      for (const c of text.split(' ')) if (c.trim()) out.push(Number(c));
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** The processes under `pid`, parents first, walked through childPids(); not `skip`'s subtree. */
function treeUnder(pid: number, skip?: number): ProcInfo[] {
  const out: ProcInfo[] = [];
  const queue = childPids(pid);
  while (queue.length > 0) {
    const next = queue.shift()!;
    const info = next === skip ? undefined : readProc(next);
    if (!info) continue;
    out.push(info);
    queue.push(...childPids(info.pid));
  }
  return out;
}

/** A pooled container's lhc-accept (its parent is nspawn's stub init), once it runs. */
function acceptOf(c: PooledContainer): ProcInfo | undefined {
  if (c.accept && alive(c.accept)) return c.accept;
  c.accept = treeUnder(c.service.pid).find((p) => p.comm === ACCEPT_COMM);
  return c.accept;
}

/**
 * Kills whatever runs in the container outside lhc-accept's own tree once a connection's process
 * has ended: processes it left behind (orphans, the stub init's children), which a container per
 * connection would have taken down with it and which may hold the connection open. Waits until
 * they are gone, bounded.
 */
async function killLeftovers(accept: ProcInfo): Promise<void> {
  for (let round = 0; round < 300; round++) {
    const left = treeUnder(accept.ppid, accept.pid);
    // Nothing left (the usual case) costs one read of the stub init's children.
    if (left.length === 0) return;
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    await sleep(10);
  }
}

/**
 * Watches a connection while it is open: once lhc-accept had a child (the connection's process)
 * and has none any more, whatever still holds the connection was left behind by it; killing
 * that closes the connection, as the end of a container per connection would have. Returns the
 * function that stops watching (and waits for a kill under way).
 */
function watchConnection(c: PooledContainer): () => Promise<void> {
  let seen = false;
  let killing: Promise<void> | undefined;
  const timer = setInterval(() => {
    const accept = acceptOf(c);
    if (!accept || killing) return;
    if (childPids(accept.pid).length > 0) seen = true;
    else if (seen) killing = killLeftovers(accept);
  }, 10);
  return async () => {
    clearInterval(timer);
    await killing;
  };
}

/**
 * After a connection closed: waits until lhc-accept has no child left (the connection's process
 * ended, or was killed by a signal; it may also have closed its output early and still run),
 * then kills whatever else still runs in the container. False when the time ran out first.
 */
async function connectionGone(
  c: PooledContainer,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  const accept = acceptOf(c);
  if (!accept) return true;
  while (childPids(accept.pid).length > 0) {
    signal?.throwIfAborted();
    if (Date.now() > deadline) return false;
    await sleep(2);
  }
  await killLeftovers(accept);
  return true;
}

/**
 * The traced inetd run with few containers (the hook's pool()): min(parallel, probes)
 * containers, each systemd-socket-activate holding a host port and passing it (LISTEN_FDS) to
 * nspawn, whose payload is lhc-accept with at most one connection at a time, in front of the
 * payload argv a container per probe would run. Worker k sends its probes to container k, one
 * after another, each as a connection that carries the request and then end of input, as stdin
 * would; the hook's record is cut after each, so every probe gets the trace its own container
 * would have recorded. lhc-accept reaps silently: a connection's exit status is the exit_group
 * its first process logged (none: killed by a signal).
 */
async function runInetdPooled(
  config: LhcConfig,
  t: RunTarget,
  identity: { machineName: string; hostname: string },
  o: RunOptions,
  hook: RunHook,
  pool: (count: number) => Promise<string>,
): Promise<ProbeRun> {
  const timeoutMs = config.service.timeout * 1000;
  const count = Math.max(1, Math.min(parallelism(o), config.probes.length));
  const accept = await pool(count);
  const records: (HookRecord | undefined)[] = [];
  const containers: (PooledContainer | undefined)[] = [];
  const starting: Promise<PooledContainer>[] = [];
  const stop = (c: PooledContainer) => c.service.stop();
  const cleanup = registerCleanup(`traced containers of ${config.name}`, async () => {
    await Promise.all(containers.map((c) => c && stop(c)));
  });

  const open = async (k: number): Promise<PooledContainer> => {
    const own = { ...identity, machineName: `${identity.machineName}-${k}` };
    const argv = containerArgv(config, t, hook, k, own, {
      // No alarm (the probe's own timeout applies), one connection at a time: the processes of
      // concurrent connections would interleave their lines in the one trace stream.
      launcher: [accept, '0', '1'],
      asPid2: true,
    });
    const begun = await hook.begin(argv, k);
    const { cut, end } = begun;
    if (!cut) {
      await end();
      throw new Error('a pooled trace hook must cut its record');
    }
    const stderr: string[] = [];
    try {
      const { service, port } = await startActivator(begun.argv, false, {
        logger: o.logger,
        ...(o.signal ? { signal: o.signal } : {}),
        onLine: (l) => stderr.push(l),
        // As quiet as the container per probe it replaces.
        quiet: true,
      });
      const c: PooledContainer = { service, port, machineName: own.machineName, cut, end, stderr };
      containers[k] = c;
      return c;
    } catch (e) {
      // The hook's reader (a FIFO) would otherwise wait forever for a writer that never came.
      await end();
      await releaseMachineName(own.machineName);
      throw e;
    }
  };

  let responses: ProbeResponse[];
  try {
    responses = await mapBounded(config.probes, count, async (probe, i, k) => {
      const c = await (starting[k] ??= open(k));
      const stdio = async (request: Buffer): Promise<Buffer> => {
        const deadline = Date.now() + timeoutMs;
        const from = c.stderr.length;
        c.lastProbe = i;
        const timedOut = async () => {
          await stop(c);
          throw timeoutError(config, `probe '${probe.name}'`, tail(stderrSince(c, from), 20));
        };
        let answer: Buffer;
        const unwatch = watchConnection(c);
        try {
          answer = await stdioExchange({ host: '127.0.0.1', port: c.port }, request, {
            timeoutMs,
            ...(o.signal ? { signal: o.signal } : {}),
          });
        } catch (e) {
          if (e instanceof ExchangeTimeout) return timedOut();
          throw e;
        } finally {
          await unwatch();
        }
        // The connection closed. Once its processes are gone, what the trace holds is theirs.
        if (!(await connectionGone(c, deadline, o.signal))) return timedOut();
        const { text } = await c.cut();
        records[i] = { text };
        // The status as the kernel reports it (exit_group(256) ends with 0); none: killed.
        const { status } = qemuExitStatus(text);
        const exitCode = status === undefined ? undefined : status & 0xff;
        if (!normalExit(config, exitCode)) {
          // Its stderr is complete once the container is gone; nothing else runs there now.
          await stop(c);
          throw inetdCrash(config, probe.name, exitCode, stderrSince(c, from));
        }
        return answer;
      };
      return askProbe(probe, { stdio }, { timeoutMs, ...(o.signal ? { signal: o.signal } : {}) });
    });
  } finally {
    await cleanup.run();
    // Whatever a container recorded after its last cut (nothing, normally) goes with its last probe.
    for (const c of containers) {
      if (!c) continue;
      const rest = (await c.end()).text;
      const last = c.lastProbe;
      if (last !== undefined && rest.trim() !== '' && records[last])
        records[last] = { text: records[last].text + rest };
      await releaseMachineName(c.machineName);
    }
  }
  return {
    responses: Object.fromEntries(config.probes.map((p, i) => [p.name, responses[i]!])),
    records: records.filter((r): r is HookRecord => r !== undefined),
  };
}

/** A probe to a listening service: through a forwarder into its network namespace, or on the activator's host port. */
async function probeListening(
  config: LhcConfig,
  probe: Probe,
  endpoint: Endpoint,
  o: RunOptions,
): Promise<ProbeResponse> {
  const timeoutMs = config.service.timeout * 1000;
  try {
    return await askProbe(probe, { endpoint }, { timeoutMs, signal: o.signal });
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(
      `probe '${probe.name}' to port ${config.service.listen} ${'path' in endpoint ? "inside the container's network namespace" : `(the socket passed to the service, host port ${endpoint.port})`} failed: ${(e as Error).message}`,
    );
  }
}

async function runListening(
  config: LhcConfig,
  t: RunTarget,
  identity: { machineName: string; hostname: string },
  o: RunOptions,
): Promise<ProbeRun> {
  const { logger } = o;
  const activated = config.service['socket-activation'];
  const { argv, end } = await begin(config, t, o, undefined, identity);
  const out: ProbeRun = { responses: {}, records: [] };
  let container: Started;
  let hostPort: number | undefined;
  try {
    if (activated) {
      // As on the board: a socket outside the container, passed in (LISTEN_FDS) on the first
      // connection; the container keeps its own network namespace.
      ({ service: container, port: hostPort } = await startActivator(argv, false, o));
    } else container = start(argv, { privileged: true, logger });
  } catch (e) {
    // The hook's reader (a FIFO) would otherwise wait forever for a writer that never came.
    await end();
    throw e;
  }
  let forwarder: Started | undefined;
  const cleanup = registerCleanup(`container ${config.name}`, async () => {
    await forwarder?.stop();
    await container.stop();
  });
  // Set by the exit handler at any await; read through the object so TS does not narrow it away.
  const state: { exited?: { exitCode: number | undefined; stderr: string } } = {};
  void container.exited.then((e) => (state.exited = e));
  try {
    let endpoint: Endpoint;
    if (hostPort !== undefined) endpoint = { host: '127.0.0.1', port: hostPort };
    else {
      const pid = await listeningPayload(config, container, state, o);
      const sock = path.join(o.workDir, 'probe.sock');
      await rm(sock, { force: true });
      forwarder = startForwarder(pid, config.service.listen!, sock, logger);
      await forwarderUp(forwarder, sock, o.signal);
      endpoint = { path: sock };
    }
    // Traced, one probe at a time: the service's processes share one QEMU_STRACE stream, and
    // lines from concurrent connections would interleave (and be lost to the parser).
    const inFlight = o.hook ? 1 : parallelism(o);
    const responses = await mapBounded(config.probes, inFlight, async (probe) => {
      const response = await probeListening(config, probe, endpoint, o);
      const gone = state.exited;
      if (gone)
        throw crashError(
          config,
          `while answering probe '${probe.name}'`,
          gone.exitCode,
          gone.stderr,
        );
      return response;
    });
    for (const [i, p] of config.probes.entries()) out.responses[p.name] = responses[i]!;
  } finally {
    await forwarder?.stop();
    await cleanup.run();
    const record = await end();
    if (record) out.records.push(record);
  }
  return out;
}

/** Waits for the payload to exist and to listen, bounded, noticing an early exit; its pid. */
async function listeningPayload(
  config: LhcConfig,
  container: Started,
  state: { exited?: { exitCode: number | undefined; stderr: string } },
  o: RunOptions,
): Promise<number> {
  const port = config.service.listen!;
  const deadline = Date.now() + config.service.timeout * 1000;
  for (;;) {
    const gone = state.exited;
    if (gone)
      throw crashError(config, `before listening on port ${port}`, gone.exitCode, gone.stderr);
    o.signal?.throwIfAborted();
    // Looked up each round: the payload appears only once nspawn (and lhc-run-as) exec'd it.
    const pid = findPayloads(container.pid)[0]?.pid;
    if (pid !== undefined && (await listening(pid, port, o.logger))) {
      o.logger.debug(`service listens on ${port} in the namespace of pid ${pid}`);
      return pid;
    }
    if (Date.now() > deadline) {
      throw new UserError(
        `service '${config.name}' did not listen on port ${port} within service.timeout (${config.service.timeout} s)`,
      );
    }
    await sleep(100);
  }
}

function parallelism(o: RunOptions): number {
  return o.parallel ?? probeParallelism();
}

/** Runs every probe against a root, the same way for the traced run and the self-check. */
export async function runProbes(config: LhcConfig, t: RunTarget, o: RunOptions): Promise<ProbeRun> {
  const identity = t.identity ?? containerIdentity(t.root);
  try {
    return await (config.service.listen !== undefined
      ? runListening(config, t, identity, o)
      : runInetd(config, t, identity, o));
  } finally {
    await releaseMachineName(identity.machineName);
  }
}
