/**
 * Running the probes against a root in systemd-nspawn, the way the traced run and the self-check
 * both do: inetd services get each gopher request on stdin in a fresh container; a listening
 * service is started once and reached through a forwarder inside the container's network
 * namespace (nsenter -n), so the container itself never gets a network. Either way the probe
 * goes through the one probe client (./client.ts askProbe), as verify's do. A hook (the tracer) may add nspawn
 * binds and environment and wrap each run's argv; it hands back what it recorded.
 */
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
import { askProbe, type Endpoint, type ProbeResponse } from './client.js';
import { containerIdentity, releaseMachineName } from './machine-name.js';
import { listening } from './listen.js';
import { findPayloads } from './proc.js';
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
  /** Called before each container run (`index` per inetd probe, undefined for a listening run). */
  begin(
    argv: string[],
    index: number | undefined,
  ): Promise<{ argv: string[]; end(): Promise<HookRecord> }>;
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
): string[] {
  return nspawnArgv({
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

async function withTimeout<T>(config: LhcConfig, what: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof ToolError && e.reason.startsWith('timed out')) {
      throw new UserError(
        `service '${config.name}' did not finish ${what} within service.timeout (${config.service.timeout} s)` +
          (e.stderrTail ? `; last lines of its stderr:\n${e.stderrTail}` : ''),
      );
    }
    throw e;
  }
}

/** Exit codes that end an inetd connection normally (service.success-exit-status), else a crash. */
function checkInetdExit(config: LhcConfig, probeName: string, r: RunResult): void {
  const normal = [0, ...(config.service['success-exit-status'] ?? [])];
  if (r.exitCode !== undefined && normal.includes(r.exitCode)) return;
  // nspawn passes the payload's own exit code on; an inetd server may end that way on purpose.
  const hint =
    r.exitCode !== undefined && r.exitCode > 0 && r.exitCode < 256
      ? `\nIf exit code ${r.exitCode} is how this service normally ends a connection, list it in ` +
        `service.success-exit-status (e.g. success-exit-status: [${r.exitCode}]).`
      : '';
  throw crashError(config, `while answering probe '${probeName}'`, r.exitCode, r.stderr, hint);
}

async function runInetd(
  config: LhcConfig,
  t: RunTarget,
  identity: { machineName: string; hostname: string },
  o: RunOptions,
): Promise<ProbeRun> {
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
