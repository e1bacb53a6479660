/**
 * Starting the service the way the board does, and reaching it: systemd-socket-activate on a free
 * 127.0.0.1 port for inetd services (one container per connection), or one container for a
 * `listen` service, reached through a Unix socket bridged into its network namespace (the
 * container has no interface but `lo`).
 */
import { statSync } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { start, tail, type Started } from '../tools/exec.js';
import { waitFor } from '../core/wait.js';
import { holdsListener, listening } from './listen.js';
import { freePort, holdOpen, type Endpoint } from './client.js';
import { alive, descendants, findPayloads, type ProcInfo } from './proc.js';
import type { ImageMount } from './mounts.js';
import type { LimitCgroups } from './limits.js';

export interface ServiceContext {
  config: LhcConfig;
  logger: Logger;
  signal?: AbortSignal;
}

/**
 * Bridges a Unix socket on the host to 127.0.0.1:PORT inside the container's network namespace.
 * Both sides allow half-open connections, so a client's half-close (a tcp probe's end of input)
 * reaches the service as a half-close and the answer still comes back.
 */
export const FORWARDER = `
const net = require('net');
const fs = require('fs');
const [, sock, port] = process.argv;
net.createServer({ allowHalfOpen: true }, (c) => {
  const u = net.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
  c.pipe(u); u.pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(sock, () => fs.chmodSync(sock, 0o666));
process.on('SIGTERM', () => process.exit(0));
`;

/**
 * The forwarder runs as root (sudo -n on a runner) and its socket would refuse the unprivileged
 * caller (EACCES): it opens the socket to everyone once listening, which is safe because the
 * socket lives in the caller's own mkdtemp directory (0700). Ready means that chmod happened.
 */
export function forwarderReady(sock: string): boolean {
  try {
    return (statSync(sock).mode & 0o777) === 0o666;
  } catch {
    return false;
  }
}

/**
 * Starts the forwarder from `sock` to PORT in the network namespace of `pid`; the caller owns
 * (and stops) the returned process, also when forwarderUp() then throws.
 */
export function startForwarder(pid: number, port: number, sock: string, logger: Logger): Started {
  return start(
    ['nsenter', '-t', String(pid), '-n', process.execPath, '-e', FORWARDER, sock, String(port)],
    { privileged: true, logger },
  );
}

/** Waits until the forwarder's socket is open to the caller (forwarderReady), else throws. */
export async function forwarderUp(
  forwarder: Started,
  sock: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (!(await waitFor(() => forwarderReady(sock) || undefined, 10_000, signal))) {
    throw new UserError(
      `the forwarder into the container's network namespace did not start: ${forwarder.command}`,
    );
  }
}

/** Everything a verify run set up, for the teardown. */
export interface RunState {
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
  /** The machine name (unique on the host) and hostname of every container of this run. */
  identity?: { machineName: string; hostname: string };
  /** The cgroups that bound each container run (service.limits), when lhc made them. */
  limitCgroups?: LimitCgroups;
}

/** A started service and how to reach it. */
export interface Running {
  endpoint: Endpoint;
  /** A live payload to inspect (for inetd: holds a connection open to get one). */
  payload(): Promise<ProcInfo | undefined>;
  /** argv for a real client, run on the host or inside the service's network namespace. */
  clientArgv(argv: string[]): { argv: string[]; privileged: boolean };
  /** Host and port the client argv should use. */
  clientTarget: { host: string; port: number };
}

/**
 * The activator (or, under sudo, its child) listens on `port`. Only its own socket counts: a
 * concurrent build may bind the same port between freePort() and our activator, which then fails
 * with "Address already in use"; connecting to the other build's service would probe its
 * containers, and our payload would never appear. Where the fd table cannot be read (a non-root
 * caller), any listener counts and the activator's exit catches the collision.
 */
async function activatorListens(pid: number, port: number, logger: Logger): Promise<boolean> {
  const pids = [pid, ...descendants(pid).map((p) => p.pid)];
  const mine = await holdsListener(pids, port);
  return mine ?? (await listening(process.pid, port, logger));
}

/**
 * nspawn's image lock, off as in the board's unit (Environment=SYSTEMD_NSPAWN_LOCK=0): the root
 * is a read-only image no container writes, and with one container per connection a container
 * ending takes the lock exclusively for a moment, so one starting then fails ("Directory tree …
 * is currently busy", systemd 252). systemd-socket-activate passes its children no environment
 * but what -E names.
 */
const NO_IMAGE_LOCK = ['-E', 'SYSTEMD_NSPAWN_LOCK=0'] as const;

/**
 * systemd-socket-activate holding 127.0.0.1:PORT on the host, as the board's socket unit holds
 * its port: with `accept`, one container per connection (inetd); without, the first connection
 * starts the one container and the listening socket is passed into it (LISTEN_FDS). Retries on a
 * port another process took meanwhile.
 */
export async function startActivator(
  argv: readonly string[],
  accept: boolean,
  o: {
    logger: Logger;
    signal?: AbortSignal;
    pickPort?: () => Promise<number>;
    /** Each line the activator and its container write, as it arrives. */
    onLine?: (line: string) => void;
    /** Log the command at debug level only (default: info, a command the user should see). */
    quiet?: boolean;
  },
): Promise<{ service: Started; port: number }> {
  const { logger, signal } = o;
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await (o.pickPort ?? freePort)();
    const mode = accept ? ['-a', '--inetd'] : [];
    const service = start(
      ['systemd-socket-activate', '-l', `127.0.0.1:${port}`, ...mode, ...NO_IMAGE_LOCK, ...argv],
      {
        privileged: true,
        logger,
        loud: attempt === 0 && !o.quiet,
        ...(o.onLine ? { onLine: o.onLine } : {}),
      },
    );
    let exited = false;
    void service.exited.then(() => (exited = true));
    const ok = await waitFor(
      async () =>
        exited ? false : (await activatorListens(service.pid, port, logger)) || undefined,
      10_000,
      signal,
    );
    if (ok) return { service, port };
    await service.stop();
    lastError = tail((await service.exited).stderr, 5);
    if (!/Address already in use/.test(lastError)) break;
  }
  throw new UserError(`systemd-socket-activate did not start listening:\n${lastError}`);
}

/** A service behind an activator on 127.0.0.1:port, reached there by every client. */
function onHostPort(
  port: number,
  payload: (endpoint: Endpoint) => Promise<ProcInfo | undefined>,
): Running {
  const endpoint = { host: '127.0.0.1', port };
  return {
    endpoint,
    clientTarget: endpoint,
    clientArgv: (a) => ({ argv: a, privileged: false }),
    payload: () => payload(endpoint),
  };
}

export async function startInetd(
  argv: string[],
  state: RunState,
  opts: ServiceContext,
  timeoutMs: number,
  /** Where the port comes from (a test passes one another process already holds). */
  pickPort: () => Promise<number> = freePort,
): Promise<Running> {
  const { signal } = opts;
  const { service, port } = await startActivator(argv, true, { ...opts, pickPort });
  state.service = service;
  return onHostPort(port, async (endpoint) => {
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
  });
}

/**
 * A `listen` service with `socket-activation: true`: the container starts on the first
 * connection and takes the host socket from LISTEN_FDS, keeping its own network namespace.
 */
export async function startSocketActivated(
  argv: string[],
  state: RunState,
  opts: ServiceContext,
  timeoutMs: number,
): Promise<Running> {
  const { signal } = opts;
  const { service, port } = await startActivator(argv, false, opts);
  state.service = service;
  return onHostPort(port, async (endpoint) => {
    let p = findPayloads(service.pid)[0];
    if (!p) {
      // Nothing has connected yet, so nothing started the container: one connection does.
      const sock = await holdOpen(endpoint, timeoutMs);
      state.sockets.add(sock);
      p = await waitFor(() => findPayloads(service.pid)[0], timeoutMs, signal);
    }
    if (p && !state.payloads.some((x) => x.pid === p!.pid)) state.payloads.push(p);
    return p && alive(p) ? p : undefined;
  });
}

export async function startListening(
  argv: string[],
  state: RunState,
  opts: ServiceContext,
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
  const isUp = await waitFor(
    async () => (exited ? false : (await listening(payload.pid, port, logger)) || undefined),
    timeoutMs,
    signal,
  );
  if (!isUp) {
    // Which process's namespace was read, so a wrong or vanished payload shows in the message.
    const checked = `pid ${payload.pid} "${payload.comm}"${alive(payload) ? '' : ', which has exited'}`;
    await service.stop();
    const stderr = tail((await service.exited).stderr, 15);
    throw new UserError(
      `the service did not listen on port ${port} inside the container within ${timeoutMs / 1000} s (checked the network namespace of ${checked}):\n${stderr}`,
    );
  }
  const sockPath = path.join(state.workDir, 'service.sock');
  const nsenter = (a: string[]) => ['nsenter', '-t', String(payload.pid), '-n', ...a];
  state.forwarder = startForwarder(payload.pid, port, sockPath, logger);
  await forwarderUp(state.forwarder, sockPath, signal);
  return {
    endpoint: { path: sockPath },
    clientTarget: { host: '127.0.0.1', port },
    clientArgv: (a) => ({ argv: nsenter(a), privileged: true }),
    payload: async () => (alive(payload) ? payload : undefined),
  };
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
