/**
 * The board's systemd units: a socket (Accept=yes for the nspawn runtime's inetd services), the service that runs
 * boardNspawnArgv() — the same command line verify boots — and the two mounts (image read-only,
 * data noexec,nosuid,nodev), plus the same mounts as fstab lines.
 */
import path from 'node:path';
import { UserError } from '../core/errors.js';
import { DEFAULT_LIMITS } from '../config/schema.js';
import { boardNspawnArgv, unitMachineName, type ContainerLimits } from '../tools/nspawn.js';
import {
  listenServiceLines,
  listenSocketLines,
  proxied,
  sharedNetworkArgv,
} from './listen-proxy.js';
import type { BoardPaths, DeployBundleOptions, ServiceSpec } from './bundle.js';
import { renderSandboxedServiceUnit } from './systemd-runtime.js';
import {
  ACCEPT_MAX_CONNECTIONS,
  acceptOnceArgv,
  needsAcceptLoop,
  warmContainers,
} from '../accept/accept-elf.js';

/** The runtime and warm containers of a bundle, as needsAcceptLoop reads them. */
function deployOf(o: { runtime?: string | undefined; warmContainers?: number | undefined }) {
  return { runtime: o.runtime ?? 'nspawn', 'warm-containers': o.warmContainers };
}

/**
 * Does each connection start a unit instance of its own when it arrives (Accept=yes)? Only under
 * the nspawn runtime without warm containers; with them each instance is a container started
 * ahead of its one connection, and the systemd runtime builds its sandbox once and lhc-accept
 * serves the connections inside it.
 */
export function unitPerConnection(o: {
  service: { inetd?: boolean | undefined };
  runtime?: string | undefined;
  warmContainers?: number | undefined;
}): boolean {
  return o.service.inetd === true && !needsAcceptLoop({ service: o.service, deploy: deployOf(o) });
}

/** Warm container instances of the service template (none where there is no such template). */
export function warmInstances(o: {
  name: string;
  service: { inetd?: boolean | undefined };
  runtime?: string | undefined;
  warmContainers?: number | undefined;
}): string[] {
  if (o.service.inetd !== true) return [];
  const n = warmContainers(deployOf(o));
  return Array.from({ length: n }, (_, i) => `${o.name}@warm${i + 1}.service`);
}

/**
 * The service unit's file name: a template when each container serves one connection (started
 * by it, or warm ahead of it), else one service.
 */
export function serviceUnitName(o: {
  name: string;
  service: { inetd?: boolean | undefined };
  runtime?: string | undefined;
  warmContainers?: number | undefined;
}): string {
  return unitPerConnection(o) || warmInstances(o).length > 0
    ? `${o.name}@.service`
    : `${o.name}.service`;
}

/** Port the socket listens on: the service's own port, or 70 (Gopher) for inetd services. */
export function listenPort(s: ServiceSpec): number {
  return s.listen ?? 70;
}

/** The root and data .mount unit names, in that order. */
export function mountUnitNames(p: BoardPaths): [string, string] {
  return [`${systemdEscapePath(p.rootMount)}.mount`, `${systemdEscapePath(p.dataMount)}.mount`];
}

/** `systemd-escape --path`: the unit name a mount point's .mount unit must have. */
export function systemdEscapePath(p: string): string {
  const trimmed = p.replace(/\/+/g, '/').replace(/^\/|\/$/g, '');
  if (trimmed === '') return '-';
  let out = '';
  const bytes = Buffer.from(trimmed, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    const c = String.fromCharCode(b);
    if (c === '/') out += '-';
    else if ((i === 0 && c === '.') || !/[A-Za-z0-9:_.]/.test(c))
      out += `\\x${b.toString(16).padStart(2, '0')}`;
    else out += c;
  }
  return out;
}

/**
 * One ExecStart= word: `%` and `$` would be expanded by systemd (specifiers, environment), so they
 * are doubled; a word with blanks, quotes, backslashes or control characters is double-quoted
 * with C escapes. The result parses back to exactly the argv given.
 */
export function systemdQuoteWord(w: string): string {
  let s = w.replace(/[%$]/g, (c) => c + c);
  // Control characters are exactly what must be escaped here.
  // eslint-disable-next-line no-control-regex
  if (s !== '' && !/[\s"'\\;\x00-\x1f\x7f]/.test(s)) return s;
  // eslint-disable-next-line no-control-regex
  s = s.replace(/[\\"\x00-\x1f\x7f]/g, (c) => {
    if (c === '\\') return '\\\\';
    if (c === '"') return '\\"';
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
  return `"${s}"`;
}

/**
 * An ExecStart= line for argv. Words in `expanded` are written as they are, for systemd to
 * expand (`${INVOCATION_ID}`); they must not need quoting.
 */
export function systemdExecLine(
  argv: readonly string[],
  expanded: ReadonlySet<string> = new Set(),
): string {
  if (!argv[0] || !path.isAbsolute(argv[0]))
    throw new UserError(`ExecStart needs an absolute program path, got ${argv[0] ?? '(none)'}`);
  return argv
    .map((w) => {
      if (!expanded.has(w)) return systemdQuoteWord(w);
      // Blanks, quotes, backslashes, control characters or a `;` would change how it splits.
      // eslint-disable-next-line no-control-regex
      if (w === '' || /[\s"'\\;\x00-\x1f\x7f]/.test(w))
        throw new Error(`cannot write ${JSON.stringify(w)} unquoted in ExecStart=`);
      return w;
    })
    .join(' ');
}

/**
 * The nspawn argv the board's service unit runs; a listening service's unit owns the network
 * namespace that its socket proxy joins (see listen-proxy.ts).
 */
export function unitNspawnArgv(o: DeployBundleOptions, p: BoardPaths): string[] {
  const argv = boardNspawnArgv({
    root: p.rootMount,
    dataDir: p.dataMount,
    dataPath: o.dataPath ?? '/data',
    command: o.service.command,
    env: o.service.env,
    runAs: o.runAs,
    workdir: o.service.workdir,
    nspawnPath: o.nspawnPath ?? '/usr/bin/systemd-nspawn',
    limits: serviceLimits(o),
    service: o.name,
    ...(o.service.inetd ? { machineName: unitMachineName(o.name) } : {}),
    ...(warmInstances(o).length > 0 ? { launcher: acceptOnceArgv([], o.service.timeout) } : {}),
  });
  return proxied(o.service) ? sharedNetworkArgv(argv) : argv;
}

export function serviceLimits(o: DeployBundleOptions): ContainerLimits {
  return o.service.limits ?? DEFAULT_LIMITS;
}

/**
 * The unit's cgroup limits: with --keep-unit nspawn runs the container in this unit's cgroup, so
 * they bound the whole container (QEMU, nspawn and every payload process), one per connection.
 */
export function limitLines(l: ContainerLimits): string {
  return (
    '# Per-container limits (service.limits in lhc.yml).\n' +
    `MemoryMax=${l.memory}\nMemorySwapMax=0\nTasksMax=${l.tasks}\nCPUQuota=${l.cpu}%\nLimitNOFILE=${l.nofile}\n`
  );
}

/** nspawn exits with the payload's code: the ones the service ends a connection with are no failure. */
function successExitLine(o: DeployBundleOptions): string {
  const codes = o.service['success-exit-status'] ?? [];
  if (!o.service.inetd || codes.length === 0) return '';
  return (
    '# service.success-exit-status: exit codes that end a connection normally.\n' +
    `SuccessExitStatus=${[...new Set(codes)].join(' ')}\n`
  );
}

export const HEADER = (name: string) =>
  `# Generated by lhc for ${name}; see README.md next to this file.\n`;

export function renderSocketUnit(o: DeployBundleOptions): string {
  const inetd = o.service.inetd === true;
  const warm = warmInstances(o);
  return (
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name}: ${inetd ? `one ${o.runtime === 'systemd' ? 'process' : 'container'} per connection` : 'listening socket'}\n` +
    (warm.length > 0
      ? `# The warm containers: each takes one connection from this socket, then is replaced.\n` +
        `Wants=${warm.join(' ')}\n`
      : '') +
    '\n[Socket]\n' +
    `ListenStream=${listenPort(o.service)}\n` +
    (warm.length > 0
      ? 'Accept=no\n' +
        '# Traffic while no warm container runs (all failed, or being replaced) starts the first.\n' +
        `Service=${warm[0]}\n`
      : inetd && !unitPerConnection(o)
        ? 'Accept=no\n' +
          `# The service's one sandbox takes the socket: lhc-accept starts a process per connection,\n` +
          `# at most ${ACCEPT_MAX_CONNECTIONS} at once (see README.md).\n`
        : inetd
          ? 'Accept=yes\n' +
            '# Each connection costs a container start: bound how many run at once.\n' +
            'MaxConnections=32\nMaxConnectionsPerSource=8\n'
          : 'Accept=no\n' +
            (proxied(o.service)
              ? listenSocketLines(o.name)
              : '# The daemon takes this socket itself (LISTEN_FDS): nspawn passes it into the container.\n')) +
    '\n[Install]\nWantedBy=sockets.target\n'
  );
}

export function renderServiceUnit(o: DeployBundleOptions, p: BoardPaths): string {
  if (o.runtime === 'systemd') return renderSandboxedServiceUnit(o, p);
  if (warmInstances(o).length > 0) return renderWarmServiceUnit(o, p);
  const inetd = o.service.inetd === true;
  const timeout = o.service.timeout;
  return (
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name}${inetd ? ' (connection %i)' : ''}\n` +
    '# Wants=, not Requires=: restarting the root mount for a new image (install.sh upgrade) must\n' +
    '# not stop a container still serving a connection from the old one; After= makes a new\n' +
    '# connection wait for the new image instead.\n' +
    `Wants=${mountUnitNames(p).join(' ')}\nAfter=${mountUnitNames(p).join(' ')}\n` +
    (inetd ? 'CollectMode=inactive-or-failed\n' : '') +
    '\n[Service]\n' +
    `ExecStart=${systemdExecLine(unitNspawnArgv(o, p), new Set(inetd ? [`--machine=${unitMachineName(o.name)}`] : []))}\n` +
    (inetd
      ? 'StandardInput=socket\nStandardOutput=socket\n'
      : proxied(o.service)
        ? listenServiceLines(o.name)
        : '# Started by the socket, whose listening socket nspawn hands to the daemon.\n') +
    '# nspawn and QEMU messages go to the journal, never to the client.\n' +
    'StandardError=journal\n' +
    (inetd
      ? "# Each connection's container has a machine name of its own (this unit's invocation id):\n" +
        '# nspawn keeps host state per machine name, which an ending container removes.\n'
      : '') +
    '# The root is a read-only image that no other container writes: nspawn need not lock it\n' +
    '# (a container ending takes its lock exclusively for a moment, and one starting then fails).\n' +
    'Environment=SYSTEMD_NSPAWN_LOCK=0\n' +
    "# --keep-unit runs the container in this unit's cgroup, which nspawn must be allowed to manage.\n" +
    'Delegate=yes\n' +
    'KillMode=mixed\n' +
    successExitLine(o) +
    limitLines(serviceLimits(o)) +
    (timeout !== undefined && inetd ? `RuntimeMaxSec=${Math.ceil(timeout)}\n` : '') +
    (proxied(o.service) ? '\n[Install]\nWantedBy=multi-user.target\n' : '')
  );
}

export function renderMountUnits(
  o: DeployBundleOptions,
  p: BoardPaths,
): { rootMount: string; dataMount: string } {
  const rootMount =
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name}: read-only root image\n\n` +
    '[Mount]\n' +
    `What=${p.image}\n` +
    `Where=${p.rootMount}\n` +
    'Type=squashfs\n' +
    'Options=loop,ro,nodev\n' +
    '# Containers serving a connection keep the old image when a new one is mounted here.\n' +
    'LazyUnmount=yes\n' +
    '\n[Install]\nWantedBy=multi-user.target\n';
  const dataMount =
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name}: writable data partition (no exec, no setuid, no devices)\n\n` +
    '[Mount]\n' +
    `What=${p.dataSource}\n` +
    `Where=${p.dataMount}\n` +
    'Type=ext4\n' +
    `Options=${p.dataIsLoopFile ? 'loop,' : ''}noexec,nosuid,nodev\n` +
    '\n[Install]\nWantedBy=multi-user.target\n';
  return { rootMount, dataMount };
}

/** fstab(5) escapes blanks and backslashes in its fields as octal. */
function fstabField(s: string): string {
  return s.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

export function renderFstab(o: DeployBundleOptions, p: BoardPaths): string {
  return (
    `# lhc ${o.name}: use these lines instead of the .mount units if you prefer /etc/fstab.\n` +
    `${fstabField(p.image)} ${fstabField(p.rootMount)} squashfs loop,ro,nodev 0 0\n` +
    `${fstabField(p.dataSource)} ${fstabField(p.dataMount)} ext4 ${p.dataIsLoopFile ? 'loop,' : ''}noexec,nosuid,nodev 0 2\n`
  );
}

/**
 * The nspawn runtime's warm container (deploy.warm-containers): a template whose instances
 * warm1..N the socket pulls in. Each starts its container before any connection; the payload,
 * lhc-accept with MAX 0, waits on the shared listening socket, serves exactly one connection
 * with a fresh process of the service command, and exits 0; systemd then starts the instance
 * again, so every connection still has a container of its own, started while nobody waited.
 */
function renderWarmServiceUnit(o: DeployBundleOptions, p: BoardPaths): string {
  const mounts = mountUnitNames(p).join(' ');
  return (
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name} (warm container %i: one connection, then replaced)\n` +
    `Requires=${o.name}.socket\nAfter=${o.name}.socket\n` +
    '# Wants=, not Requires=: restarting the root mount for a new image (install.sh upgrade) must\n' +
    '# not stop a container serving a connection from the old one; install.sh then has every\n' +
    '# warm container replaced, a busy one once its connection ends (see KillMode= below).\n' +
    `Wants=${mounts}\nAfter=${mounts}\n` +
    '# Every connection restarts the instance: no start rate limit (a failed start is not restarted).\n' +
    'StartLimitIntervalSec=0\n' +
    '\n[Service]\n' +
    `ExecStart=${systemdExecLine(unitNspawnArgv(o, p), new Set([`--machine=${unitMachineName(o.name)}`]))}\n` +
    `Sockets=${o.name}.socket\n` +
    '# lhc-accept exits 0 after its connection whatever the service returned: start the next one.\n' +
    'Restart=on-success\nRestartSec=0\n' +
    "# The connection is the payload's stdin and stdout; nspawn and QEMU messages go to the journal.\n" +
    'StandardInput=null\nStandardOutput=journal\nStandardError=journal\n' +
    "# Each container has a machine name of its own (this run's invocation id): nspawn keeps host\n" +
    '# state per machine name, which an ending container removes.\n' +
    '# The root is a read-only image that no other container writes: nspawn need not lock it\n' +
    '# (a container ending takes its lock exclusively for a moment, and one starting then fails).\n' +
    'Environment=SYSTEMD_NSPAWN_LOCK=0\n' +
    "# --keep-unit runs the container in this unit's cgroup, which nspawn must be allowed to manage.\n" +
    'Delegate=yes\n' +
    '# Stopping ends the container at once (nspawn kills it). An upgrade instead sends lhc-accept\n' +
    '# SIGTERM (install.sh): an idle container ends at once, a busy one when its connection ends,\n' +
    '# and either is started again on the new image.\n' +
    'KillMode=mixed\n' +
    limitLines(serviceLimits(o))
  );
}
