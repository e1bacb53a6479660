/**
 * systemd-nspawn command lines as data. The deploy bundle's service unit, verify and the traced
 * run all build their argv here, so what is verified is exactly what the board runs.
 * Flags were checked against systemd 252 (see DESIGN.md).
 */
import { createHash, randomBytes } from 'node:crypto';
import { runAsEnv, type RunAs } from '../service-user/passwd.js';
import { RUN_AS_PATH } from '../service-user/run-as-elf.js';

/** What one container may use (service.limits; see src/config/schema.ts). */
export interface ContainerLimits {
  /** Bytes of memory. */
  memory: number;
  tasks: number;
  /** Percent of one core. */
  cpu: number;
  nofile: number;
}

/**
 * The limits nspawn sets itself, as resource limits of the payload. Memory, tasks and CPU are
 * cgroup limits set around nspawn (the unit's on the board, harness/limits.ts elsewhere):
 * RLIMIT_AS would break QEMU user-mode, which reserves gigabytes of address space up front.
 * RLIMIT_NPROC counts the payload's own (user-namespaced) uid, so it bounds forks even where no
 * pids cgroup is available.
 */
export function limitFlags(l: ContainerLimits): string[] {
  return [`--rlimit=RLIMIT_NOFILE=${l.nofile}`, `--rlimit=RLIMIT_NPROC=${l.tasks}`];
}

export interface NspawnOptions {
  /** Directory root (a loop-mounted image or a writable copy). */
  root: string;
  /** Entrypoint argv inside the container. */
  command: readonly string[];
  /** Mount the root read-only (the board's way). */
  readOnly?: boolean;
  /** Host dir bound at the data path (the writable, noexec data partition on the board). */
  dataDir?: string;
  dataPath?: string;
  /** Extra binds, host:container, read-write. */
  binds?: readonly { host: string; container: string; readOnly?: boolean }[];
  env?: Readonly<Record<string, string>>;
  /** Start the command through lhc-run-as, which drops to these ids (service.user). */
  runAs?: RunAs;
  workdir?: string;
  /** The hardening set the board uses: private network, no CAP_NET_ADMIN, no new privileges, user namespace. */
  harden?: boolean;
  /**
   * Private user namespace with ownership mapped (needs a kernel with idmapped mounts): a range
   * nspawn picks (true), or this service's fixed range (see serviceUsernsFlags).
   */
  userNamespace?: boolean | { service: string };
  /** Copy the root per run (throwaway writes). */
  ephemeral?: boolean;
  /** Give the container its own network namespace even without full hardening (trace runs). */
  privateNetwork?: boolean;
  /** Machine name; nspawn derives one from the root's directory name when absent. */
  machineName?: string;
  /** Hostname inside the container; nspawn uses the machine name when absent. */
  hostname?: string;
  /** What nspawn does with /etc/resolv.conf: nothing (default), or bind the host's for the run. */
  resolvConf?: 'off' | 'bind-host';
  /**
   * Runs first, as the container's root, with the rest of the payload argv (lhc-run-as, command)
   * as its own: the warm containers' lhc-accept (the traced run's too, harness/run.ts
   * runInetdPooled). A stop kills the container (nspawn's default): its drain is never asked of
   * nspawn, whose one signal to a PID 1 without a handler is lost while the container starts
   * (the unit hung until TimeoutStopSec on the simulated board); install.sh signals lhc-accept.
   */
  launcher?: readonly string[];
  /** nspawn's stub init as PID 1, the payload PID 2: orphans are reaped by the stub, not by it. */
  asPid2?: boolean;
}

/**
 * Flags every lhc container run shares: no machined/dbus needed, plain pipes for stdio, and
 * nspawn leaves /etc alone (no localtime, resolv.conf or journal link: a pruned root has no /etc,
 * and what nspawn would add there is not part of the image). `--settings=no`: no .nspawn file
 * (an admin's /etc/systemd/nspawn/root.nspawn on the board, or one beside a build's root) can
 * change the container verify checked, and nspawn skips looking for one.
 */
export const BASE_FLAGS = [
  '--register=no',
  '--keep-unit',
  '--settings=no',
  '-q',
  '--console=pipe',
  '--timezone=off',
  '--resolv-conf=off',
  '--link-journal=no',
] as const;

/**
 * Capabilities nspawn grants by default that a service payload never needs and an intruder
 * would: network and mount administration, raw devices, tracing, rebooting. What stays
 * (CAP_NET_BIND_SERVICE, CAP_SETUID/SETGID, CAP_CHOWN, ...) is what a daemon like nginx uses to
 * bind its port and drop to its worker user. All of it is namespaced by the user namespace too.
 */
export const DROPPED_CAPABILITIES = [
  'CAP_NET_ADMIN',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_MODULE',
  'CAP_SYS_PTRACE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_LINUX_IMMUTABLE',
  'CAP_AUDIT_CONTROL',
] as const;

/** Options of every writable scratch mount in the board's container: nothing there runs. */
export const SCRATCH_MOUNT_OPTIONS = 'noexec,nosuid,nodev';

/**
 * nspawn's own /tmp, /run and /dev/shm are writable tmpfs mounts that allow exec (checked on
 * systemd 252); these custom mounts stack noexec ones on top. /run needs a second tmpfs at
 * /run/host: nspawn remounts /run/host read-only after the custom mounts when a user namespace
 * is used, and fails ("Invalid argument") if our /run hid its mount point.
 */
export const SCRATCH_MOUNTS = [
  { path: '/dev/shm', mode: '1777' },
  { path: '/run', mode: '755' },
  { path: '/run/host', mode: '755' },
  { path: '/tmp', mode: '1777' },
] as const;

/** The writable mounts nspawn gives every container, which verify checks are noexec. */
export const SCRATCH_PATHS = ['/tmp', '/run', '/dev/shm'] as const;

/** The board's hardening, in one list so the unit file and verify can never drift apart. */
export const HARDENING_FLAGS = [
  '--private-network',
  `--drop-capability=${DROPPED_CAPABILITIES.join(',')}`,
  '--no-new-privileges=yes',
  ...SCRATCH_MOUNTS.map((m) => `--tmpfs=${m.path}:mode=${m.mode},${SCRATCH_MOUNT_OPTIONS}`),
] as const;

/**
 * `-U`: nspawn picks a free uid range per container, ownership mapped. The build's own runs
 * (trace, self-check) use it; the board's line uses a fixed range per service instead (see
 * serviceUsernsFlags).
 */
export const USERNS_FLAGS = ['-U', '--private-users-ownership=map'] as const;

/**
 * Where the board's fixed uid ranges come from: 65536 ids per service, in 0x70000000-0x7FFDFFFF.
 * nspawn 252's `-U` picks from 0x00080000-0x6FFF0000, so no picked range of another container
 * overlaps one of these (systemd's UIDS-GIDS.md leaves this block to "dynamic transient userns
 * ranges" of systemd-nsresourced, 256 and newer, used by unprivileged containers only; the block
 * above it is the "foreign" range and above 0x7FFFFFFF ids are unsafe).
 */
export const SERVICE_UID_POOL = { first: 0x7000_0000, size: 0x1_0000, slots: 0xffe } as const;

/**
 * The host uid that is uid 0 inside every container of service `name`: one slot of
 * SERVICE_UID_POOL chosen by a hash of the name, so the unit and verify agree without asking the
 * board anything.
 */
export function serviceUidBase(name: string): number {
  const h = createHash('sha256').update(name).digest().readUInt32BE(0);
  return SERVICE_UID_POOL.first + (h % SERVICE_UID_POOL.slots) * SERVICE_UID_POOL.size;
}

/**
 * The board line's user namespace: the service's own fixed range (serviceUidBase), ownership
 * mapped. Not `-U`: picking a range holds /etc/.pwd.lock from before the container's mounts
 * until its payload is about to run, seccomp filters included, and asks NSS for each candidate,
 * so concurrent connections set up one after another (systemd 252). The payload is still never
 * root on the host (uid 0 inside is the range's first id); every connection of one service shares
 * the range, as the systemd runtime's connections share the service's user. Without the lock,
 * concurrent containers must not share a machine name (they race on
 * /run/systemd/nspawn/propagate/NAME, which an exiting one removes while a starting one binds
 * it): the board unit and verify give each connection its own (perConnectionMachine...).
 */
export function serviceUsernsFlags(name: string): string[] {
  return [
    `--private-users=${serviceUidBase(name)}:${SERVICE_UID_POOL.size}`,
    '--private-users-ownership=map',
  ];
}

export function nspawnArgv(o: NspawnOptions): string[] {
  const base =
    o.resolvConf === 'bind-host'
      ? BASE_FLAGS.map((f) => (f === '--resolv-conf=off' ? '--resolv-conf=bind-host' : f))
      : BASE_FLAGS;
  const argv = ['systemd-nspawn', ...base, `--directory=${o.root}`];
  if (o.machineName) argv.push(`--machine=${o.machineName}`);
  if (o.hostname) argv.push(`--hostname=${o.hostname}`);
  if (o.readOnly) argv.push('--read-only');
  if (o.asPid2) argv.push('--as-pid2');
  if (o.ephemeral) argv.push('--ephemeral');
  if (o.harden) argv.push(...HARDENING_FLAGS);
  else if (o.privateNetwork) argv.push('--private-network');
  if (o.userNamespace === true) argv.push(...USERNS_FLAGS);
  else if (o.userNamespace) argv.push(...serviceUsernsFlags(o.userNamespace.service));
  // Under a user namespace an unmapped bind shows every file as nobody's: idmap keeps the data
  // partition's owners as they are on disk (the data template's), so the service can write there.
  if (o.dataDir)
    argv.push(`--bind=${o.dataDir}:${o.dataPath ?? '/data'}${o.userNamespace ? ':idmap' : ''}`);
  for (const b of o.binds ?? [])
    argv.push(`${b.readOnly ? '--bind-ro' : '--bind'}=${b.host}:${b.container}`);
  // HOME, USER and LOGNAME as --user would set them; the service's own env wins, as over User=.
  const env = { ...(o.runAs ? runAsEnv(o.runAs) : {}), ...o.env };
  for (const [k, v] of Object.entries(env).sort(([a], [b]) => (a < b ? -1 : 1))) {
    argv.push(`--setenv=${k}=${v}`);
  }
  if (o.workdir) argv.push(`--chdir=${o.workdir}`);
  // Not --user=: nspawn would run getent inside the container and make a home directory there.
  argv.push('--', ...(o.launcher ?? []), ...(o.runAs ? [RUN_AS_PATH] : []), ...o.command);
  return argv;
}

/**
 * Directories nspawn needs in a root: /usr (else "doesn't look like an OS tree") and the API
 * file systems' mount points, which a read-only root cannot create.
 */
export const NSPAWN_DIRS = ['/usr', '/proc', '/sys', '/dev', '/run', '/tmp'] as const;

/**
 * What the systemd runtime (deploy.runtime: systemd) mounts beyond nspawn's set: its own noexec
 * /var/tmp (TemporaryFileSystem=, see deploy/systemd-runtime.ts). Only that runtime's images get
 * it, so an nspawn image stays byte for byte what it was.
 */
export const SYSTEMD_RUNTIME_DIRS = ['/var/tmp'] as const;

/** Every mount point a root must carry to run read-only: nspawn's, the runtime's, then the data partition's. */
export function mountPoints(dataPath: string, runtime: 'nspawn' | 'systemd' = 'nspawn'): string[] {
  const extra = runtime === 'systemd' ? SYSTEMD_RUNTIME_DIRS : [];
  return [...new Set<string>([...NSPAWN_DIRS, ...extra, dataPath])];
}

/** Where the trace FIFO is bound inside the container (see src/trace/fifo.ts). */
export const TRACE_MOUNT = '/lhc-trace';

/** What the board runs: the service's command, env, ids and workdir, on its root and data. */
export interface BoardRun {
  root: string;
  dataDir: string;
  dataPath: string;
  command: readonly string[];
  env?: Readonly<Record<string, string>>;
  runAs?: RunAs;
  workdir?: string;
  /** The nspawn binary to name in argv[0] (a unit's ExecStart wants an absolute path). */
  nspawnPath?: string;
  limits?: ContainerLimits;
  /** The service's name: its fixed uid range (serviceUsernsFlags) and the containers' hostname. */
  service: string;
  /**
   * For containers lhc starts on the build host (see containerIdentity), or the unit's
   * per-connection name (machineNameWord); nspawn derives one from the root's path when absent.
   */
  machineName?: string;
  /** See NspawnOptions.launcher (the board unit's warm containers). */
  launcher?: readonly string[];
}

/**
 * A root's or service's name as a hostname: what nspawn would have made of a root directory so
 * named (letters, digits and dashes, at most 40).
 */
export function hostnameOf(name: string): string {
  const host = name
    .replace(/[^A-Za-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return host || 'lhc';
}

/**
 * The board's container command line: read-only root, full hardening, the service's own user
 * namespace, its name as the hostname. The deploy unit and verify both use this one builder, so
 * what verify boots is what the board runs. The one difference: a warm container's unit puts
 * lhc-accept in front of the payload (`launcher`), where verify's activator hands each container
 * its connection directly; `lhc verify --board` and the board tests run the units themselves.
 */
export function boardNspawnArgv(o: BoardRun): string[] {
  const argv = nspawnArgv({
    root: o.root,
    command: o.command,
    readOnly: true,
    harden: true,
    userNamespace: { service: o.service },
    dataDir: o.dataDir,
    dataPath: o.dataPath,
    env: o.env,
    runAs: o.runAs,
    workdir: o.workdir,
    ...(o.machineName ? { machineName: o.machineName } : {}),
    ...(o.launcher ? { launcher: o.launcher } : {}),
    // Fixed: nspawn would use the machine name, which is per connection.
    hostname: hostnameOf(o.service),
  });
  if (o.nspawnPath) argv[0] = o.nspawnPath;
  if (o.limits) argv.splice(argv.indexOf('--'), 0, ...limitFlags(o.limits));
  return argv;
}

/**
 * The board unit's machine name for each connection: `lhc-NAME-` and the unit's invocation id
 * (32 hex digits, which systemd expands in ExecStart= and logs with every journal line of that
 * connection), at most 63 characters. Concurrent containers must not share a machine name (see
 * serviceUsernsFlags).
 */
export function unitMachineName(service: string): string {
  return `lhc-${hostnameOf(service).slice(0, 26)}-\${INVOCATION_ID}`;
}

/**
 * For systemd-socket-activate (verify's stand-in for the board's Accept=yes socket), which has
 * no per-connection argument: the nspawn argv's `--machine=NAME` becomes `NAME-PID`, PID being
 * the connection's own process (a shell that execs nspawn, so the name is unique while that
 * container runs), the rest of the argv as it was.
 */
export const PER_CONNECTION_MACHINE = 'p="$1"; m="$2"; shift 2; exec "$p" --machine="$m-$$" "$@"';

export function perConnectionMachine(argv: readonly string[]): string[] {
  const i = argv.findIndex((a) => a.startsWith('--machine='));
  const end = argv.indexOf('--');
  if (i < 1 || (end >= 0 && i > end)) throw new Error('nspawn argv without --machine=');
  const name = argv[i]!.slice('--machine='.length);
  const rest = argv.filter((_, j) => j !== 0 && j !== i);
  return ['/bin/sh', '-c', PER_CONNECTION_MACHINE, 'lhc-machine', argv[0]!, name, ...rest];
}

/**
 * A machine name no other container on this host uses, and the hostname nspawn would have given
 * the root by default (its directory name). nspawn keys host state by machine name
 * (/run/systemd/nspawn/propagate/NAME, and unix-export/NAME on newer systemd) and removes it when
 * a container exits, so two builds whose roots share a directory name ("trace-root",
 * "self-check-root", the service's name) must not share one. The hostname stays what it was, so
 * a service that prints it answers the same in every build.
 */
export function containerIdentity(
  rootDir: string,
  unique: string = `${process.pid.toString(36)}${randomBytes(5).toString('hex')}`,
): { machineName: string; hostname: string } {
  const hostname = hostnameOf(rootDir.split('/').filter(Boolean).at(-1) ?? '');
  return { machineName: `lhc-${hostname.slice(0, 32)}-${unique}`, hostname };
}
