/**
 * systemd-nspawn command lines as data. The deploy bundle's service unit, verify and the traced
 * run all build their argv here, so what is verified is exactly what the board runs.
 * Flags were checked against systemd 252 (see DESIGN.md).
 */
import { randomBytes } from 'node:crypto';
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
  /** Private user namespace with ownership mapped (needs a kernel with idmapped mounts). */
  userNamespace?: boolean;
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
 * `-U` picks a free uid range per container. That costs a global lock (systemd 252 holds
 * /etc/.pwd.lock from before the container's mounts until its payload is about to run, seccomp
 * filters included), so concurrent connections set up one after another; a fixed range per
 * service avoids it (+50% throughput at 8 connections at once on the simulated board under
 * load), but is held back: concurrent containers sharing a machine name (every connection of a
 * board unit, every connection of one verify run) race on /run/systemd/nspawn/propagate/NAME,
 * which an exiting container removes while a starting one is about to bind it ("Failed to mount
 * /run/systemd/nspawn/propagate/root ... No such file or directory"). The lock keeps few
 * containers in set-up at once, which makes that rare; without it, 2 of about 300 starts at 8 at
 * once failed on the build host. It needs a machine name per connection first (the unit could
 * use --machine=NAME-${INVOCATION_ID}; verify's socket activation has no per-connection
 * argument). See test/bench/nspawn.ts.
 */
export const USERNS_FLAGS = ['-U', '--private-users-ownership=map'] as const;

export function nspawnArgv(o: NspawnOptions): string[] {
  const base =
    o.resolvConf === 'bind-host'
      ? BASE_FLAGS.map((f) => (f === '--resolv-conf=off' ? '--resolv-conf=bind-host' : f))
      : BASE_FLAGS;
  const argv = ['systemd-nspawn', ...base, `--directory=${o.root}`];
  if (o.machineName) argv.push(`--machine=${o.machineName}`);
  if (o.hostname) argv.push(`--hostname=${o.hostname}`);
  if (o.readOnly) argv.push('--read-only');
  if (o.ephemeral) argv.push('--ephemeral');
  if (o.harden) argv.push(...HARDENING_FLAGS);
  else if (o.privateNetwork) argv.push('--private-network');
  if (o.userNamespace) argv.push(...USERNS_FLAGS);
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
  argv.push('--', ...(o.runAs ? [RUN_AS_PATH] : []), ...o.command);
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
  /** For containers lhc starts on the build host (see containerIdentity); the board's unit sets none. */
  machineName?: string;
  hostname?: string;
}

/**
 * The board's container command line: read-only root, full hardening, user namespace. The
 * deploy unit and verify both use this one builder, so what verify boots is what the board runs.
 */
export function boardNspawnArgv(o: BoardRun): string[] {
  const argv = nspawnArgv({
    root: o.root,
    command: o.command,
    readOnly: true,
    harden: true,
    userNamespace: true,
    dataDir: o.dataDir,
    dataPath: o.dataPath,
    env: o.env,
    runAs: o.runAs,
    workdir: o.workdir,
    ...(o.machineName ? { machineName: o.machineName } : {}),
    ...(o.hostname ? { hostname: o.hostname } : {}),
  });
  if (o.nspawnPath) argv[0] = o.nspawnPath;
  if (o.limits) argv.splice(argv.indexOf('--'), 0, ...limitFlags(o.limits));
  return argv;
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
  const host = rootDir
    .split('/')
    .filter(Boolean)
    .at(-1)!
    .replace(/[^A-Za-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  const hostname = host || 'lhc';
  return { machineName: `lhc-${hostname.slice(0, 32)}-${unique}`, hostname };
}
