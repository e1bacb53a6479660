/**
 * The board's deploy bundle (<outDir>/deploy/): systemd units that run the image the way verify
 * ran it, fstab lines as an alternative to the mount units, an OCI runtime config for runc, and
 * install notes. The service's ExecStart is built by nspawnArgv() with the same hardening flags
 * verify checks, so what is tested is what the board runs.
 *
 * Board layout (all under <boardDir>, default /var/lib/lhc/<name>):
 *   <name>.squashfs        the image, loop-mounted read-only at root/
 *   <name>-data.ext4       the data partition (or a real partition), mounted noexec,nosuid,nodev at data/
 */
import { resolveInRoot } from '../root/resolve.js';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { nspawnArgv } from '../tools/nspawn.js';
import { renderInstallScript } from '../deploy/install-script.js';
import {
  PROXY_PROGRAMS,
  listenServiceLines,
  listenSocketLines,
  proxyUnitName,
  renderProxyUnit,
  sharedNetworkArgv,
} from '../deploy/listen-proxy.js';

export interface ServiceSpec {
  command: readonly string[];
  env?: Readonly<Record<string, string>>;
  user?: string | number;
  workdir?: string;
  inetd?: boolean;
  listen?: number;
  /** Seconds one connection (or run) may take; becomes RuntimeMaxSec. */
  timeout?: number;
}

export interface DeployBundleOptions {
  name: string;
  /** The bundle goes to <outDir>/deploy. */
  outDir: string;
  service: ServiceSpec;
  /** Where the data partition is mounted in the container; default /data. */
  dataPath?: string;
  /** File names of the packed artifacts (as in outDir). */
  imageFile: string;
  dataTemplateFile: string;
  /** Install directory on the board; default /var/lib/lhc/<name>. */
  boardDir?: string;
  /** What the data mount mounts; default <boardDir>/<name>-data.ext4 (a loop file). A partition works too. */
  dataSource?: string;
  /** systemd-nspawn on the board; ExecStart wants an absolute path. */
  nspawnPath?: string;
  /** The pruned root, to resolve a user name for the OCI config (runc takes numeric ids only). */
  root?: string;
  logger?: Logger;
}

export interface BoardPaths {
  boardDir: string;
  image: string;
  rootMount: string;
  dataSource: string;
  dataMount: string;
  dataIsLoopFile: boolean;
}

export interface DeployBundle {
  dir: string;
  /** Every file written, relative to outDir (e.g. "deploy/gophermoon.socket"), sorted. */
  files: string[];
  paths: BoardPaths;
  units: { socket: string; service: string; rootMount: string; dataMount: string; proxy?: string };
}

/** Port the socket listens on: the service's own port, or 70 (Gopher) for inetd services. */
export function listenPort(s: ServiceSpec): number {
  return s.listen ?? 70;
}

export function boardPaths(
  o: Pick<DeployBundleOptions, 'name' | 'boardDir' | 'imageFile' | 'dataSource'>,
): BoardPaths {
  const boardDir = o.boardDir ?? `/var/lib/lhc/${o.name}`;
  if (!path.isAbsolute(boardDir))
    throw new UserError(`board directory must be absolute, got ${boardDir}`);
  const dataSource = o.dataSource ?? `${boardDir}/${o.name}-data.ext4`;
  return {
    boardDir,
    image: `${boardDir}/${o.imageFile}`,
    rootMount: `${boardDir}/root`,
    dataSource,
    dataMount: `${boardDir}/data`,
    dataIsLoopFile: !dataSource.startsWith('/dev/'),
  };
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

export function systemdExecLine(argv: readonly string[]): string {
  if (!argv[0] || !path.isAbsolute(argv[0]))
    throw new UserError(`ExecStart needs an absolute program path, got ${argv[0] ?? '(none)'}`);
  return argv.map(systemdQuoteWord).join(' ');
}

/** The nspawn argv the board runs; the same builder and flags as verify. */
export function boardNspawnArgv(o: DeployBundleOptions, p: BoardPaths): string[] {
  const argv = nspawnArgv({
    root: p.rootMount,
    command: o.service.command,
    readOnly: true,
    harden: true,
    userNamespace: true,
    dataDir: p.dataMount,
    dataPath: o.dataPath ?? '/data',
    env: o.service.env,
    user: o.service.user,
    workdir: o.service.workdir,
  });
  argv[0] = o.nspawnPath ?? '/usr/bin/systemd-nspawn';
  return o.service.inetd ? argv : sharedNetworkArgv(argv);
}

const HEADER = (name: string) =>
  `# Generated by lhc for ${name}; see README.md next to this file.\n`;

export function renderSocketUnit(o: DeployBundleOptions): string {
  const inetd = o.service.inetd === true;
  return (
    HEADER(o.name) +
    '[Unit]\n' +
    `Description=lhc ${o.name}: ${inetd ? 'one container per connection' : 'listening socket'}\n\n` +
    '[Socket]\n' +
    `ListenStream=${listenPort(o.service)}\n` +
    (inetd
      ? 'Accept=yes\n' +
        '# Each connection costs a container start: bound how many run at once.\n' +
        'MaxConnections=32\nMaxConnectionsPerSource=8\n'
      : 'Accept=no\n' + listenSocketLines(o.name)) +
    '\n[Install]\nWantedBy=sockets.target\n'
  );
}

export function renderServiceUnit(o: DeployBundleOptions, p: BoardPaths): string {
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
    `ExecStart=${systemdExecLine(boardNspawnArgv(o, p))}\n` +
    (inetd ? 'StandardInput=socket\nStandardOutput=socket\n' : listenServiceLines(o.name)) +
    '# nspawn and QEMU messages go to the journal, never to the client.\n' +
    'StandardError=journal\n' +
    "# --keep-unit runs the container in this unit's cgroup, which nspawn must be allowed to manage.\n" +
    'Delegate=yes\n' +
    'KillMode=mixed\n' +
    (timeout !== undefined && inetd ? `RuntimeMaxSec=${Math.ceil(timeout)}\n` : '') +
    (inetd ? '' : '\n[Install]\nWantedBy=multi-user.target\n')
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

/** Numeric uid/gid for runc: numbers as given, names from the root's /etc/passwd. */
export async function resolveUser(
  user: string | number | undefined,
  root: string | undefined,
): Promise<{ uid: number; gid: number }> {
  if (user === undefined || user === 0 || user === '0' || user === 'root')
    return { uid: 0, gid: 0 };
  if (typeof user === 'number' || /^\d+$/.test(user)) {
    const n = Number(user);
    return { uid: n, gid: n };
  }
  if (!root)
    throw new UserError(
      `service.user "${user}": the OCI config needs a numeric uid and no root was given to look it up`,
    );
  let passwd: string;
  try {
    // Resolved inside the image: an absolute symlink there must never reach the host's passwd.
    const inRoot = resolveInRoot(root, '/etc/passwd');
    if (!inRoot.exists) throw new Error('no /etc/passwd');
    passwd = await readFile(inRoot.host, 'utf8');
  } catch {
    throw new UserError(
      `service.user "${user}": the image has no /etc/passwd to look the name up in; use a numeric uid`,
    );
  }
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === user && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new UserError(`service.user "${user}" is not in the image's /etc/passwd`);
}

/** Capabilities the payload keeps under runc. An inetd payload reads stdin and writes stdout: none. */
export function ociCapabilities(s: ServiceSpec): string[] {
  if (s.inetd) return [];
  // A listening daemon binds its port and may drop to an unprivileged user itself.
  return ['CAP_NET_BIND_SERVICE', 'CAP_SETGID', 'CAP_SETUID'];
}

/**
 * The runc bundle's user namespace: container root is host uid/gid 100000. Debian's runc 1.1
 * cannot idmap a bind mount (nspawn's `--bind=...:idmap` can), so the data partition's owners
 * are shifted by this much once, with shiftOwnersCommand(), before runc uses it.
 */
export const OCI_USER_NAMESPACE = { hostId: 100_000, size: 65_536 } as const;

/** A shell command that adds the runc user namespace's offset to every owner under `dir`. */
export function shiftOwnersCommand(
  dir: string,
  offset: number = OCI_USER_NAMESPACE.hostId,
): string {
  return (
    `find ${dir} -xdev -depth -exec sh -c 'for f; do ` +
    `chown -h "$((${offset} + $(stat -c %u "$f"))):$((${offset} + $(stat -c %g "$f")))" "$f"; ` +
    `done' sh {} +`
  );
}

export interface OciOptions {
  /** Give the container its own user namespace, root mapped to this host range (runc needs ids mapped onto the image's owners). */
  userNamespace?: { hostId: number; size: number };
}

/**
 * OCI runtime config (spec 1.0.2, what Debian's runc speaks) with the same guarantees as the
 * nspawn unit: read-only root, a network namespace holding only lo, no new privileges, no
 * CAP_NET_ADMIN/CAP_SYS_ADMIN (only ociCapabilities()), /data bound noexec,nosuid,nodev, and
 * (writeDeployBundle passes OCI_USER_NAMESPACE) root mapped to an unprivileged host range.
 */
export function ociConfig(
  o: DeployBundleOptions,
  p: BoardPaths,
  ids: { uid: number; gid: number },
  opts: OciOptions = {},
): object {
  const caps = ociCapabilities(o.service);
  const env = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];
  for (const [k, v] of Object.entries(o.service.env ?? {}).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0,
  ))
    env.push(`${k}=${v}`);
  const namespaces: { type: string }[] = [
    { type: 'pid' },
    { type: 'network' },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'mount' },
    { type: 'cgroup' },
  ];
  if (opts.userNamespace) namespaces.push({ type: 'user' });
  const config: Record<string, unknown> = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: ids,
      args: [...o.service.command],
      env,
      cwd: o.service.workdir ?? '/',
      capabilities: {
        bounding: caps,
        effective: caps,
        permitted: caps,
        inheritable: [],
        ambient: [],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: p.rootMount, readonly: true },
    hostname: o.name,
    mounts: [
      {
        destination: '/proc',
        type: 'proc',
        source: 'proc',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'noexec', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: o.dataPath ?? '/data',
        type: 'bind',
        source: p.dataMount,
        options: ['rbind', 'rw', 'noexec', 'nosuid', 'nodev'],
      },
    ],
    linux: {
      // A new network namespace without interfaces configured: runc brings up lo only.
      namespaces,
      ...(opts.userNamespace
        ? {
            uidMappings: [
              { containerID: 0, hostID: opts.userNamespace.hostId, size: opts.userNamespace.size },
            ],
            gidMappings: [
              { containerID: 0, hostID: opts.userNamespace.hostId, size: opts.userNamespace.size },
            ],
          }
        : {}),
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/proc/scsi',
        '/sys/firmware',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  return config;
}

export function renderReadme(o: DeployBundleOptions, p: BoardPaths): string {
  const rootUnit = `${systemdEscapePath(p.rootMount)}.mount`;
  const dataUnit = `${systemdEscapePath(p.dataMount)}.mount`;
  const inetd = o.service.inetd === true;
  const svc = inetd ? `${o.name}@.service` : `${o.name}.service`;
  return `# Deploying ${o.name} to the board

Copy the build output directory to the board, then as root, from that directory:

\`\`\`sh
sh deploy/install.sh install      # also: upgrade, rollback, uninstall [--purge]
\`\`\`

The script checks the board first (root, systemd as init and new enough for the unit's flags,
systemd-container, loop and squashfs support, the kernel's idmapped mounts), then the artifacts
against SHA256SUMS. It installs the image as ${p.boardDir}/releases/<id>/ beside the one running
now and switches the \`current\` link with one rename, so \`rollback\` can switch back to
\`previous\` (one previous image is kept). Switching remounts the root: a container serving a
connection keeps the old image until it ends, a listening service restarts on the new one, and
the socket keeps listening, so a connection made meanwhile waits instead of being refused. The
data partition is made from the template only the first time and kept across upgrades.
Running it again changes nothing. By hand, for the first install, the same steps are:

\`\`\`sh
sha256sum -c SHA256SUMS                      # the artifacts arrived intact
install -d -m 0755 ${p.boardDir} ${p.rootMount} ${p.dataMount}
install -m 0644 ${o.imageFile} ${p.image}
${
  p.dataIsLoopFile
    ? `# data partition as a file (use a real partition by editing What= in ${dataUnit}):
truncate -s 64M ${p.dataSource}
mkfs.ext4 -q ${p.dataSource}`
    : `mkfs.ext4 -q ${p.dataSource}                   # the data partition: everything on it is lost`
}
mount -o ${p.dataIsLoopFile ? 'loop,' : ''}noexec,nosuid,nodev ${p.dataSource} ${p.dataMount}
tar -xzpf ${o.dataTemplateFile} --numeric-owner -C ${p.dataMount}
umount ${p.dataMount}
install -m 0644 'deploy/${rootUnit}' 'deploy/${dataUnit}' deploy/${o.name}.socket deploy/${svc}${inetd ? '' : ` deploy/${proxyUnitName(o.name)}`} /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now '${rootUnit}' '${dataUnit}' ${o.name}.socket
\`\`\`

${
  inetd
    ? `Each connection to port ${listenPort(o.service)} starts one container (\`${o.name}@<n>.service\`) with the
connection on stdin/stdout`
    : `The first connection to port ${listenPort(o.service)} starts \`${o.name}-proxy.service\`, which starts the container
(\`${svc}\`) and forwards each connection to the daemon's own port ${listenPort(o.service)} inside it. The
container's network namespace belongs to \`${svc}\` (\`PrivateNetwork=yes\`, only \`lo\`, no route out,
so the service can reach nothing and nothing reaches it); the proxy (systemd-socket-proxyd)
joins that namespace (\`JoinsNamespaceOf=\`) and is the only way in`
}; its stderr and nspawn's messages go to the journal
(\`journalctl -u '${svc.replace('@.', '@*.')}'\`). The root is the read-only image, the network is private
(only \`lo\`, CAP_NET_ADMIN dropped), no new privileges, a private user namespace, and
${o.dataPath ?? '/data'} is the only writable path, mounted noexec,nosuid,nodev.

\`deploy/fstab\` holds the same two mounts as /etc/fstab lines, for boards that prefer fstab.
\`deploy/oci/config.json\` runs the same image under runc (\`runc run --bundle deploy/oci ${o.name}\`,
with the image mounted at ${p.rootMount} and the data partition at ${p.dataMount}), in a user
namespace that maps container root to host uid ${OCI_USER_NAMESPACE.hostId}. runc cannot idmap the data mount, so
for runc shift the data partition's owners once, after unpacking the template:

\`\`\`sh
${shiftOwnersCommand(p.dataMount)}
\`\`\`
`;
}

export async function writeDeployBundle(o: DeployBundleOptions): Promise<DeployBundle> {
  if (!o.service.command[0]?.startsWith('/'))
    throw new UserError('service.command[0] must be an absolute path in the image');
  const p = boardPaths(o);
  const dir = path.join(o.outDir, 'deploy');
  // Written whole every time: a unit left from an earlier build (another name) must not ship.
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, 'oci'), { recursive: true });
  const inetd = o.service.inetd === true;
  const { rootMount, dataMount } = renderMountUnits(o, p);
  const units = {
    socket: `${o.name}.socket`,
    service: inetd ? `${o.name}@.service` : `${o.name}.service`,
    rootMount: `${systemdEscapePath(p.rootMount)}.mount`,
    dataMount: `${systemdEscapePath(p.dataMount)}.mount`,
    ...(inetd ? {} : { proxy: proxyUnitName(o.name) }),
  };
  const ids = await resolveUser(o.service.user, o.root);
  const contents: Record<string, string> = {
    [units.socket]: renderSocketUnit(o),
    [units.service]: renderServiceUnit(o, p),
    [units.rootMount]: rootMount,
    [units.dataMount]: dataMount,
    fstab: renderFstab(o, p),
    'oci/config.json':
      JSON.stringify(ociConfig(o, p, ids, { userNamespace: OCI_USER_NAMESPACE }), null, 2) + '\n',
    'README.md': renderReadme(o, p),
  };
  if (!inetd)
    contents[proxyUnitName(o.name)] = renderProxyUnit(
      o.name,
      listenPort(o.service),
      systemdExecLine,
      HEADER(o.name),
    );
  contents['install.sh'] = renderInstallScript({
    name: o.name,
    boardDir: p.boardDir,
    imageFile: o.imageFile,
    dataTemplateFile: o.dataTemplateFile,
    dataSource: p.dataSource,
    dataIsLoopFile: p.dataIsLoopFile,
    dataMount: p.dataMount,
    units: { ...units, extra: inetd ? [] : [proxyUnitName(o.name)] },
    nspawnPath: o.nspawnPath ?? '/usr/bin/systemd-nspawn',
    programs: inetd ? [] : PROXY_PROGRAMS,
  });
  for (const [f, text] of Object.entries(contents))
    await writeFile(path.join(dir, f), text, { mode: f.endsWith('.sh') ? 0o755 : 0o644 });
  o.logger?.info(
    `deploy bundle: ${dir} (${units.socket}, ${units.service}, mounts, fstab, oci/config.json)`,
  );
  return {
    dir,
    files: Object.keys(contents)
      .map((f) => `deploy/${f}`)
      .sort(),
    paths: p,
    units,
  };
}
