/**
 * How the board's port reaches a `listen:` service whose container has a private network.
 *
 * A daemon such as nginx binds its own port and ignores a socket systemd holds, and inside the
 * container's network namespace (only `lo`) that port is unreachable from outside. So, as
 * `man systemd-socket-proxyd` describes: the board's `<name>.socket` activates
 * `<name>-proxy.service`, which runs systemd-socket-proxyd in the service's network namespace
 * (PrivateNetwork=yes + JoinsNamespaceOf=) and forwards each connection to 127.0.0.1:PORT there.
 * The service unit owns that namespace (PrivateNetwork=yes) and its nspawn shares it instead of
 * making one of its own. The container still sees only `lo` and has no route out; the proxy
 * is the one way in, and it only ever connects to that one port.
 *
 * A daemon that takes its socket from systemd (`service.socket-activation: true`, LISTEN_FDS)
 * needs none of this: the socket unit activates `<name>.service` directly and nspawn passes the
 * listening socket into the container, which keeps a network namespace of its own (only `lo`).
 * A socket made in the board's namespace still accepts there, so no proxy or shared namespace is
 * needed, and connections that arrive while the daemon restarts wait in the socket's backlog.
 */
import path from 'node:path';

/** Where Debian (and Ubuntu) install systemd-socket-proxyd. */
export const SOCKET_PROXYD = '/lib/systemd/systemd-socket-proxyd';
/** Waits for the daemon's port inside the shared namespace; bash is Essential on Debian boards. */
export const BASH = '/bin/bash';

/** A listening service reached through the proxy: one that binds its port itself. */
export function proxied(s: { inetd?: boolean; 'socket-activation'?: boolean }): boolean {
  return s.inetd !== true && s['socket-activation'] !== true;
}

export function proxyUnitName(name: string): string {
  return `${name}-proxy.service`;
}

/** The socket unit's line that hands connections to the proxy instead of `<name>.service`. */
export function listenSocketLines(name: string): string {
  return `# Connections go to the proxy, which forwards them into the container's private network.\nService=${proxyUnitName(name)}\n`;
}

/** The service unit's lines for a listening service: it owns the private network namespace. */
export function listenServiceLines(name: string): string {
  return (
    `# The container's network: only lo, no route out. ${proxyUnitName(name)} joins this namespace\n` +
    "# to forward the board socket's connections to the daemon's port (see README.md).\n" +
    'PrivateNetwork=yes\n' +
    "# That namespace belongs to the board's user namespace, not the container's (-U), so the\n" +
    "# container's root may not bind a port below 1024 there: allow it in this namespace only,\n" +
    '# which holds nothing but lo.\n' +
    `ExecStartPre=/bin/sh -c "echo 0 > ${UNPRIVILEGED_PORT_START}"\n`
  );
}

/** Per network namespace: the lowest port an unprivileged process may bind. */
export const UNPRIVILEGED_PORT_START = '/proc/sys/net/ipv4/ip_unprivileged_port_start';

/** nspawn argv for a listening service: the unit's PrivateNetwork= namespace replaces nspawn's own. */
export function sharedNetworkArgv(argv: readonly string[]): string[] {
  return argv.filter((a) => a !== '--private-network');
}

/** A sh/bash script that waits (up to 10 s) until something accepts on 127.0.0.1:port. */
function waitForPortScript(port: number): string {
  return (
    `i=0; while [ $i -lt 200 ]; do ` +
    `(exec 3<>/dev/tcp/127.0.0.1/${port}) 2>/dev/null && exit 0; i=$((i+1)); sleep 0.05; done; ` +
    `echo "nothing accepts on 127.0.0.1:${port} in the container" >&2; exit 1`
  );
}

/**
 * The proxy's own sandbox, for the systemd runtime (whose units score 2.0 or lower with
 * systemd-analyze security): a transient user, no capabilities, nothing of the file system
 * writable; it only accepts the socket systemd hands it and connects to 127.0.0.1:PORT.
 */
export const PROXY_SANDBOX =
  '# Its own sandbox (deploy.runtime: systemd).\n' +
  'DynamicUser=yes\nPrivateUsers=yes\nPrivateDevices=yes\nPrivateIPC=yes\nProtectSystem=strict\n' +
  'ProtectHome=yes\nProtectProc=invisible\nProcSubset=pid\nProtectKernelTunables=yes\n' +
  'ProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectControlGroups=yes\nProtectClock=yes\n' +
  'ProtectHostname=yes\nCapabilityBoundingSet=\nAmbientCapabilities=\n' +
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nSystemCallArchitectures=native\n' +
  'SystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n' +
  'SystemCallErrorNumber=EPERM\nLockPersonality=yes\nRestrictNamespaces=yes\n' +
  'RestrictSUIDSGID=yes\nRestrictRealtime=yes\nMemoryDenyWriteExecute=yes\nDevicePolicy=closed\n' +
  'KeyringMode=private\nRemoveIPC=yes\nUMask=0077\n';

export function renderProxyUnit(
  name: string,
  port: number,
  execLine: (argv: readonly string[]) => string,
  header: string,
  sandbox = '',
): string {
  const service = `${name}.service`;
  return (
    header +
    '[Unit]\n' +
    `Description=lhc ${name}: the board's port ${port} forwarded into the container's private network\n` +
    `Requires=${service}\nAfter=${service}\n` +
    `JoinsNamespaceOf=${service}\n\n` +
    '[Service]\n' +
    'PrivateNetwork=yes\n' +
    '# The daemon needs a moment to bind its port after the container starts.\n' +
    `ExecStartPre=${execLine([BASH, '-c', waitForPortScript(port)])}\n` +
    `ExecStart=${execLine([SOCKET_PROXYD, `127.0.0.1:${port}`])}\n` +
    'NoNewPrivileges=yes\n' +
    'StandardError=journal\n' +
    sandbox
  );
}

/** Programs the proxy unit runs, for the install script's prerequisite check. */
export const PROXY_PROGRAMS = [SOCKET_PROXYD, BASH].map((p) => path.normalize(p));
