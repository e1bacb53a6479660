/**
 * Running the probes against a root in systemd-nspawn, the way the traced run and the self-check
 * both do: inetd services get each gopher request on stdin in a fresh container; a listening
 * service is started once and reached from the host inside the container's network namespace
 * (nsenter -n), so the container itself never gets a network. A hook (the tracer) may add nspawn
 * binds and environment and wrap each run's argv; it hands back what it recorded.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import type { Probe } from '../config/schema.js';
import { ToolError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { registerCleanup } from '../core/cleanup.js';
import { sleep } from '../core/wait.js';
import { run, start, tail, type RunResult, type Started } from '../tools/exec.js';
import { nspawnArgv } from '../tools/nspawn.js';
import { probeRequest, type ProbeResponse } from './client.js';
import { parseHttpResponse } from './http-wire.js';
import { containerIdentity, releaseMachineName } from './machine-name.js';
import { listening } from './listen.js';
import { findPayloads } from './proc.js';
import { startActivator } from './service.js';
import type { RunAs } from '../service-user/passwd.js';

/** Where one set of probe runs happens. */
export interface RunTarget {
  root: string;
  /** One machine name for every container of the run (see harness/machine-name.ts). */
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
  env?: Record<string, string>;
  binds?: { host: string; container: string }[];
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
}

function containerArgv(config: LhcConfig, t: RunTarget, hook: RunHook | undefined): string[] {
  return nspawnArgv({
    root: t.root,
    command: config.service.command,
    readOnly: t.readOnly,
    dataDir: t.dataDir,
    dataPath: config.data.path,
    binds: hook?.binds ?? [],
    env: { ...config.service.env, ...hook?.env },
    ...(t.runAs ? { runAs: t.runAs } : {}),
    ...(config.service.workdir ? { workdir: config.service.workdir } : {}),
    harden: t.harden,
    privateNetwork: true,
    ...(t.identity ?? containerIdentity(t.root)),
  });
}

async function begin(config: LhcConfig, t: RunTarget, o: RunOptions, index: number | undefined) {
  const argv = containerArgv(config, t, o.hook);
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

async function runInetd(config: LhcConfig, t: RunTarget, o: RunOptions): Promise<ProbeRun> {
  const out: ProbeRun = { responses: {}, records: [] };
  for (const [i, probe] of config.probes.entries()) {
    const { argv, end } = await begin(config, t, o, i);
    let r: RunResult;
    try {
      r = await withTimeout(
        config,
        `probe '${probe.name}'`,
        run(argv, {
          privileged: true,
          input: probeRequest(probe),
          binary: true,
          reject: false,
          timeoutMs: config.service.timeout * 1000,
          logger: o.logger,
          ...(o.signal ? { signal: o.signal } : {}),
        }),
      );
    } finally {
      const record = await end();
      if (record) out.records.push(record);
    }
    const normal = [0, ...(config.service['success-exit-status'] ?? [])];
    if (r.exitCode === undefined || !normal.includes(r.exitCode)) {
      // nspawn passes the payload's own exit code on; an inetd server may end that way on purpose.
      const hint =
        r.exitCode !== undefined && r.exitCode > 0 && r.exitCode < 256
          ? `\nIf exit code ${r.exitCode} is how this service normally ends a connection, list it in ` +
            `service.success-exit-status (e.g. success-exit-status: [${r.exitCode}]).`
          : '';
      throw crashError(config, `while answering probe '${probe.name}'`, r.exitCode, r.stderr, hint);
    }
    out.responses[probe.name] =
      probe.type === 'http'
        ? pick(parseHttpResponse(r.stdoutBytes, `probe '${probe.name}' (stdout of the service)`))
        : { body: r.stdoutBytes };
  }
  return out;
}

/** Status and body: what runs are compared by (headers carry dates and versions). */
function pick(r: ProbeResponse): ProbeResponse {
  return { status: r.status, body: r.body };
}

/**
 * A tiny raw-TCP client run inside the namespace with this same Node binary: argv is the port, the
 * request in hex, "1" to half-close after sending, and the idle limit in ms ("" for none). The
 * same rules as harness/client.ts exchange(), which verify uses from the host.
 */
const RAW_CLIENT =
  'const [p,h,hc,idle]=process.argv.slice(1);const c=[];let t;' +
  'const done=()=>{process.stdout.write(Buffer.concat(c));process.exit(0)};' +
  "const s=require('net').connect(+p,'127.0.0.1',()=>{const b=Buffer.from(h,'hex');hc==='1'?s.end(b):s.write(b)});" +
  "s.on('data',d=>{c.push(d);if(idle){clearTimeout(t);t=setTimeout(done,+idle)}});s.on('end',done);" +
  "s.on('error',e=>{console.error(e.message);process.exit(1)});";

/** How a listening service is reached: from inside its network namespace, or on a host port. */
interface Reach {
  /** Prefix for the client's argv (nsenter into the namespace), empty on the host. */
  ns: string[];
  port: number;
  privileged: boolean;
  where: string;
}

function insideNamespace(pid: number, port: number): Reach {
  return {
    ns: ['nsenter', '-t', String(pid), '-n', '--'],
    port,
    privileged: true,
    where: "inside the container's network namespace",
  };
}

async function probeListening(
  config: LhcConfig,
  reach: Reach,
  probe: Probe,
  o: RunOptions,
): Promise<ProbeResponse> {
  const { ns, port, privileged } = reach;
  const timeoutMs = config.service.timeout * 1000;
  const { logger } = o;
  if (probe.type !== 'http') {
    const tcp = probe.type === 'tcp' ? probe : undefined;
    const client = [
      process.execPath,
      '-e',
      RAW_CLIENT,
      String(port),
      probeRequest(probe).toString('hex'),
      tcp && !tcp['half-close'] ? '0' : '1',
      tcp ? String(Math.round(tcp['idle-timeout'] * 1000)) : '',
    ];
    const r = await run([...ns, ...client], { privileged, binary: true, timeoutMs, logger });
    return { body: r.stdoutBytes };
  }
  const bodyFile = path.join(o.workDir, `probe-${probe.name}.body`);
  await rm(bodyFile, { force: true });
  const url = `http://127.0.0.1:${port}${probe.path}`;
  const curl = ['curl', '-s', '-S', '-o', bodyFile, '-w', '%{http_code}'];
  const r = await run([...ns, ...curl, '--max-time', String(config.service.timeout), url], {
    privileged,
    timeoutMs,
    logger,
    reject: false,
  });
  if (r.exitCode !== 0) {
    throw new UserError(
      `probe '${probe.name}': ${url} ${reach.where} failed: ${tail(r.stderr, 5) || `curl exit code ${r.exitCode}`}`,
    );
  }
  const body = await readFile(bodyFile).catch(() => Buffer.alloc(0));
  return { status: Number(r.stdout.trim()), body };
}

async function runListening(config: LhcConfig, t: RunTarget, o: RunOptions): Promise<ProbeRun> {
  const { logger } = o;
  const activated = config.service['socket-activation'];
  const { argv, end } = await begin(config, t, o, undefined);
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
  const cleanup = registerCleanup(`container ${config.name}`, () => container.stop());
  // Set by the exit handler at any await; read through the object so TS does not narrow it away.
  const state: { exited?: { exitCode: number | undefined; stderr: string } } = {};
  void container.exited.then((e) => (state.exited = e));
  try {
    const reach =
      hostPort !== undefined
        ? { ns: [], port: hostPort, privileged: false, where: `(the socket passed to the service)` }
        : await listeningPayload(config, container, state, o);
    for (const probe of config.probes) {
      out.responses[probe.name] = await probeListening(config, reach, probe, o);
      const gone = state.exited;
      if (gone)
        throw crashError(
          config,
          `while answering probe '${probe.name}'`,
          gone.exitCode,
          gone.stderr,
        );
    }
  } finally {
    await cleanup.run();
    const record = await end();
    if (record) out.records.push(record);
  }
  return out;
}

/** Waits for the payload to exist and to listen, bounded, noticing an early exit. */
async function listeningPayload(
  config: LhcConfig,
  container: Started,
  state: { exited?: { exitCode: number | undefined; stderr: string } },
  o: RunOptions,
): Promise<Reach> {
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
      return insideNamespace(pid, port);
    }
    if (Date.now() > deadline) {
      throw new UserError(
        `service '${config.name}' did not listen on port ${port} within service.timeout (${config.service.timeout} s)`,
      );
    }
    await sleep(100);
  }
}

/** Runs every probe against a root, the same way for the traced run and the self-check. */
export async function runProbes(config: LhcConfig, t: RunTarget, o: RunOptions): Promise<ProbeRun> {
  const target = { ...t, identity: t.identity ?? containerIdentity(t.root) };
  try {
    return await (config.service.listen !== undefined
      ? runListening(config, target, o)
      : runInetd(config, target, o));
  } finally {
    await releaseMachineName(target.identity.machineName);
  }
}
