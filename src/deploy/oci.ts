/**
 * The same image for runc: an OCI runtime config with the guarantees of the nspawn unit, and the
 * numeric ids runc needs (service.user as resolved at build time).
 */
import { runAsEnv, type RunAs } from '../service-user/passwd.js';
import type { BoardPaths, DeployBundleOptions, ServiceSpec } from './bundle.js';
import { DEFAULT_LIMITS } from '../config/schema.js';

/** runc's process.user: service.user's ids (runc switches to them itself, no helper needed). */
export function ociUser(runAs: RunAs | undefined): {
  uid: number;
  gid: number;
  additionalGids?: number[];
} {
  if (!runAs) return { uid: 0, gid: 0 };
  return { uid: runAs.uid, gid: runAs.gid, additionalGids: runAs.groups };
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
  ids: ReturnType<typeof ociUser>,
  opts: OciOptions = {},
): object {
  const caps = ociCapabilities(o.service);
  const limits = o.service.limits ?? DEFAULT_LIMITS;
  const env = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];
  const vars = { ...(o.runAs ? runAsEnv(o.runAs) : {}), ...o.service.env };
  for (const [k, v] of Object.entries(vars).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
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
      rlimits: [
        { type: 'RLIMIT_NOFILE', hard: limits.nofile, soft: limits.nofile },
        { type: 'RLIMIT_NPROC', hard: limits.tasks, soft: limits.tasks },
      ],
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
      // service.limits, as the nspawn unit's MemoryMax=, TasksMax=, CPUQuota=.
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: { limit: limits.memory },
        pids: { limit: limits.tasks },
        cpu: { quota: limits.cpu * 1000, period: 100_000 },
      },
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
