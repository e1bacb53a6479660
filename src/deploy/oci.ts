/**
 * The same image for runc: an OCI runtime config with the guarantees of the nspawn unit, and the
 * numeric ids runc needs (names resolved in the image's own /etc/passwd).
 */
import { readFile } from 'node:fs/promises';
import { UserError } from '../core/errors.js';
import { resolveInRoot } from '../root/resolve.js';
import type { BoardPaths, DeployBundleOptions, ServiceSpec } from './bundle.js';
import { DEFAULT_LIMITS } from '../config/schema.js';

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
  const limits = o.service.limits ?? DEFAULT_LIMITS;
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
