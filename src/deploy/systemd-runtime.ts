/**
 * `deploy.runtime: systemd`: the board runs the payload as a sandboxed systemd service on the
 * mounted read-only image (RootDirectory=), with no nspawn process. systemd sets up every
 * namespace itself, once: an inetd service's connections are accepted inside that one sandbox by
 * lhc-accept (Accept=no, see accept/accept-elf.ts), a fresh process each, because Accept=yes
 * would build the whole sandbox again in a fork of PID 1 for every connection.
 *
 * The sandbox is at least systemd's portable-service `strict` profile. Checked on a Debian 12
 * board (systemd 252) booted in nspawn on a cgroup v1 hybrid host:
 * - DynamicUser= implies PrivateTmp=, whose /tmp and /var/tmp allow exec, and NoExecPaths= does
 *   not reach those mounts; so the unit runs as a static system user (sysusers.d, made by
 *   install.sh) and mounts /tmp and /var/tmp itself with TemporaryFileSystem= noexec,nosuid,nodev.
 *   systemd-analyze still reports `PrivateTmp=` as missing (0.2 of the score).
 * - PrivateUsers=yes maps root and the unit's user to themselves, everything else to nobody: the
 *   payload is that unprivileged user on the host, with no capabilities in any namespace.
 * - MemoryDenyWriteExecute=yes stops QEMU user-mode's JIT ("mprotect of jit buffer: Operation not
 *   permitted"): the aarch64 board runs the payload natively and keeps it; a simulated board that
 *   emulates the payload turns it off with a drop-in (see board/verify-board.ts).
 */
import { ACCEPT_MAX_CONNECTIONS, ACCEPT_PATH, acceptArgv } from '../accept/accept-elf.js';
import type { ContainerLimits } from '../tools/nspawn.js';
import { SCRATCH_MOUNT_OPTIONS } from '../tools/nspawn.js';
import type { BoardPaths, DeployBundleOptions } from './bundle.js';
import { UNPRIVILEGED_PORT_START, proxied, proxyUnitName } from './listen-proxy.js';
import {
  HEADER,
  mountUnitNames,
  serviceLimits,
  systemdExecLine,
  systemdQuoteWord,
} from './systemd.js';

/** The board user the service runs as; install.sh creates it from deploy/<name>.sysusers.conf. */
export function serviceUser(name: string): string {
  return `lhc-${name}`;
}

/** The bundle's sysusers.d snippet, and its name in /etc/sysusers.d on the board. */
export function sysusersFiles(name: string): { bundle: string; installed: string } {
  return { bundle: `${name}.sysusers.conf`, installed: `lhc-${name}.conf` };
}

/** sysusers.d(5): one system user and its group, no home, no shell. */
export function renderSysusers(name: string): string {
  return (
    HEADER(name) +
    `# The user ${name}'s sandboxed service runs as (deploy.runtime: systemd).\n` +
    `u ${serviceUser(name)} - "lhc ${name}" /nonexistent /usr/sbin/nologin\n`
  );
}

/**
 * Writable scratch mounts the unit makes itself, each noexec,nosuid,nodev like nspawn's; the image
 * must carry their mount points (see systemdRuntimeMountPoints()).
 */
export const SYSTEMD_SCRATCH_MOUNTS = [
  { path: '/tmp', mode: '1777' },
  { path: '/var/tmp', mode: '1777' },
  { path: '/run', mode: '755' },
  { path: '/dev/shm', mode: '1777' },
] as const;

function envLine(env: Readonly<Record<string, string>> | undefined): string {
  const pairs = Object.entries(env ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  return pairs.length
    ? `Environment=${pairs.map(([k, v]) => systemdQuoteWord(`${k}=${v}`)).join(' ')}\n`
    : '';
}

function limitLines(l: ContainerLimits, shared: boolean): string {
  // One sandbox for every connection: the sum of what each connection's own could use.
  const n = shared ? ACCEPT_MAX_CONNECTIONS : 1;
  return (
    (shared
      ? `# service.limits per connection, ${n} connections at once (see README.md).\n`
      : '# Per-service limits (service.limits in lhc.yml).\n') +
    `MemoryMax=${l.memory * n}\nMemorySwapMax=0\nTasksMax=${l.tasks * n}\nCPUQuota=${l.cpu * n}%\n` +
    `LimitNOFILE=${l.nofile}\nLimitNPROC=${l.tasks * n}\n`
  );
}

/**
 * The sandbox. `inetd`: the payload gets its connection on stdin/stdout and needs no socket of
 * its own (RestrictAddressFamilies=none). A listening daemon binds its port in the private
 * network (AF_INET, AF_INET6) and may talk to itself over AF_UNIX.
 */
export function sandboxLines(inetd: boolean): string {
  const scratch = SYSTEMD_SCRATCH_MOUNTS.map(
    (m) => `${m.path}:mode=${m.mode},${SCRATCH_MOUNT_OPTIONS}`,
  ).join(' ');
  return (
    '# The sandbox: at least the portable-service "strict" profile (see README.md).\n' +
    'PrivateNetwork=yes\nPrivateUsers=yes\nPrivateDevices=yes\nPrivateIPC=yes\nPrivateMounts=yes\n' +
    '# Instead of PrivateTmp=, whose /tmp and /var/tmp would allow exec.\n' +
    `TemporaryFileSystem=${scratch}\n` +
    'ProtectSystem=strict\nProtectHome=yes\nProtectProc=invisible\nProcSubset=pid\n' +
    'ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\n' +
    'ProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\n' +
    'NoNewPrivileges=yes\nCapabilityBoundingSet=\nAmbientCapabilities=\n' +
    `RestrictAddressFamilies=${inetd ? 'none' : 'AF_UNIX AF_INET AF_INET6'}\n` +
    (inetd ? 'IPAddressDeny=any\n' : 'IPAddressDeny=any\nIPAddressAllow=localhost\n') +
    'SystemCallArchitectures=native\nSystemCallFilter=@system-service\n' +
    'SystemCallFilter=~@privileged @resources\nSystemCallErrorNumber=EPERM\n' +
    'LockPersonality=yes\nRestrictNamespaces=yes\nRestrictSUIDSGID=yes\nRestrictRealtime=yes\n' +
    'MemoryDenyWriteExecute=yes\nDevicePolicy=closed\nKeyringMode=private\nRemoveIPC=yes\n' +
    'UMask=0077\n'
  );
}

/** The service unit of the systemd runtime: same file name as the nspawn runtime's. */
export function renderSandboxedServiceUnit(o: DeployBundleOptions, p: BoardPaths): string {
  const inetd = o.service.inetd === true;
  const dataPath = o.dataPath ?? '/data';
  const mounts = mountUnitNames(p);
  const command = inetd ? acceptArgv(o.service.command, o.service.timeout) : o.service.command;
  return (
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name}, sandboxed service on the image${inetd ? ' (a process per connection)' : ''}\n` +
    '# Wants=, not Requires=: an image switch (install.sh upgrade) must not stop a connection\n' +
    '# still served from the old image; After= makes a new one wait for the new image.\n' +
    `Wants=${mounts.join(' ')}\nAfter=${mounts.join(' ')}\n` +
    '\n[Service]\n' +
    `ExecStart=${systemdExecLine(command)}\n` +
    envLine(o.service.env) +
    (o.service.workdir ? `WorkingDirectory=${systemdQuoteWord(o.service.workdir)}\n` : '') +
    '# The read-only image is the whole file system; the data partition (mounted\n' +
    `# noexec,nosuid,nodev on the board) is the one writable path, at ${dataPath}.\n` +
    `RootDirectory=${p.rootMount}\nMountAPIVFS=yes\n` +
    (proxied(o.service) ? PORT_START_ROOT_LINES : '') +
    `BindPaths=${systemdQuoteWord(`${p.dataMount}:${dataPath}`)}\n` +
    userLines(o) +
    (inetd
      ? `# ${ACCEPT_PATH} takes the listening socket (LISTEN_FDS) and starts the command once per\n` +
        '# connection, with the connection as its stdin and stdout and SIGALRM after service.timeout.\n' +
        '# Stopping (an upgrade) sends SIGTERM to the loop only: it stops accepting, lets the\n' +
        '# connections in flight finish (each ends by its alarm at the latest), then exits; new ones\n' +
        '# wait in the socket meanwhile. systemd 252 refuses to start a SendSIGKILL=no unit while\n' +
        "# processes of its last run remain, so draining is the loop's job.\n" +
        `KillMode=mixed\nTimeoutStopSec=${stopSeconds(o.service.timeout)}\n`
      : !proxied(o.service)
        ? '# Started by the socket, whose listening socket the daemon takes (LISTEN_FDS).\n'
        : `# ${proxyUnitName(o.name)} joins this service's network namespace (see README.md). The\n` +
          '# daemon binds its port as an unprivileged user: allow that in this namespace only, which\n' +
          "# holds nothing but lo. '+' runs this one fixed command as root without the sandbox, but\n" +
          '# systemd still puts it in the PrivateNetwork= namespace, so the board keeps its own limit.\n' +
          `ExecStartPre=+/bin/sh -c "echo 0 > ${UNPRIVILEGED_PORT_START}"\n`) +
    "# The payload's messages go to the journal, never to the client.\n" +
    'StandardError=journal\n' +
    sandboxLines(inetd) +
    limitLines(serviceLimits(o), inetd) +
    (proxied(o.service) ? '\n[Install]\nWantedBy=multi-user.target\n' : '')
  );
}

/** The drain takes at most one connection's alarm; then systemd kills what is left. */
function stopSeconds(timeout: number | undefined): number {
  return timeout === undefined ? 90 : Math.ceil(timeout) + 5;
}

/**
 * A proxied daemon's ExecStartPre= lowers ip_unprivileged_port_start with the board's /bin/sh:
 * the image has no shell, and a '+' command still gets RootDirectory= (systemd 252 then fails
 * with "Failed at step NAMESPACE spawning /bin/sh"). Only ExecStart= runs on the image.
 */
const PORT_START_ROOT_LINES =
  "# The image has no shell: ExecStartPre= below runs the board's /bin/sh, only ExecStart= the image.\n" +
  'RootDirectoryStartOnly=yes\n';

/**
 * service.user's ids when the config names one (numeric: the image has no passwd to ask), else
 * the unprivileged user install.sh makes with systemd-sysusers; never root.
 */
function userLines(o: DeployBundleOptions): string {
  const r = o.runAs;
  if (!r || r.uid === 0) return `User=${serviceUser(o.name)}\nGroup=${serviceUser(o.name)}\n`;
  const extra = r.groups.filter((g) => g !== r.gid);
  return (
    `User=${r.uid}\nGroup=${r.gid}\n` +
    (extra.length ? `SupplementaryGroups=${extra.join(' ')}\n` : '')
  );
}
