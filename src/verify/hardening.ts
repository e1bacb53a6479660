/**
 * Hardening checks read from the host on the live container payload, so they prove what the
 * kernel enforces, not what the command line asked for. Each check is a pure function of the
 * /proc text (testable on recorded samples) plus one reader for a live pid.
 *
 * Under binfmt_misc with the F flag the payload process is QEMU running the aarch64 code; its
 * /proc entries are still the container's (mounts, capabilities, namespaces).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { HardeningCheck } from '../build-result.js';
import type { Logger } from '../core/logger.js';
import { shebang } from '../elf/loader.js';
import { resolveInRoot } from '../root/resolve.js';
import { run } from '../tools/exec.js';
import type { RunAs } from '../service-user/passwd.js';
import { SCRATCH_PATHS } from '../tools/nspawn.js';

export interface MountEntry {
  mountPoint: string;
  /** Per-mount options (ro, noexec, ...). */
  options: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6) continue;
    out.push({
      mountPoint: unescape(fields[4]!),
      options: fields[5]!.split(','),
      fsType: fields[dash + 1] ?? '',
      source: unescape(fields[dash + 2] ?? ''),
      superOptions: (fields[dash + 3] ?? '').split(','),
    });
  }
  return out;
}

/** The mount that is visible at `mountPoint`: the last one stacked there. */
function topMount(mounts: MountEntry[], mountPoint: string): MountEntry | undefined {
  return mounts.filter((m) => m.mountPoint === mountPoint).at(-1);
}

function describeMount(m: MountEntry): string {
  return `${m.fsType} ${m.source} (${m.options.join(',')})`;
}

export function checkRootReadOnly(mountinfo: string): HardeningCheck {
  const name = 'root mounted read-only';
  const root = topMount(parseMountInfo(mountinfo), '/');
  if (!root) return { name, ok: false, detail: 'no mount at / in the container' };
  return { name, ok: root.options.includes('ro'), detail: describeMount(root) };
}

export function checkDataMount(mountinfo: string, dataPath: string): HardeningCheck {
  const name = `${dataPath} noexec,nosuid,nodev`;
  const m = topMount(parseMountInfo(mountinfo), dataPath);
  if (!m) return { name, ok: false, detail: `nothing is mounted at ${dataPath}` };
  const missing = ['noexec', 'nosuid', 'nodev'].filter((o) => !m.options.includes(o));
  return {
    name,
    ok: missing.length === 0,
    detail: (missing.length ? `missing ${missing.join(',')}: ` : '') + describeMount(m),
  };
}

/**
 * A scratch path nspawn would mount writable (/tmp, /run, /dev/shm): it must be either not a
 * mount of its own (then it is part of the read-only root) or mounted noexec,nosuid,nodev.
 */
export function checkScratchMount(mountinfo: string, mountPoint: string): HardeningCheck {
  const name = `${mountPoint} absent or noexec,nosuid,nodev`;
  const m = topMount(parseMountInfo(mountinfo), mountPoint);
  if (!m) return { name, ok: true, detail: 'not a mount point (part of the read-only root)' };
  const missing = ['noexec', 'nosuid', 'nodev'].filter((o) => !m.options.includes(o));
  return {
    name,
    ok: missing.length === 0,
    detail: (missing.length ? `missing ${missing.join(',')}: ` : '') + describeMount(m),
  };
}

/** What nspawn gives a container's /dev (TMPFS_LIMITS_DEV in systemd 252): 4 MiB. */
export const DEV_TMPFS_MAX_BYTES = 4 * 1024 * 1024;

function tmpfsSizeBytes(m: MountEntry): number | undefined {
  const v = m.superOptions.find((o) => o.startsWith('size='))?.slice(5);
  const n = v ? /^(\d+)([kmg]?)$/i.exec(v) : null;
  if (!n) return undefined;
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[n[2]!.toLowerCase() as '' | 'k'];
  return Number(n[1]) * unit;
}

/**
 * /dev must not become a place to drop and run code. nspawn mounts it as its own tmpfs (device
 * nodes, so it cannot be nodev) and, in systemd 252, offers no flag to make it noexec or
 * read-only, and the container's root may write there. What can be checked, and is: nosuid, and
 * either noexec/ro or nspawn's small size cap (4 MiB), so a larger /dev mount or one without
 * nosuid (a foreign bind, a changed nspawn) is caught.
 */
export function checkDevMount(mountinfo: string): HardeningCheck {
  const name = '/dev nosuid, noexec or capped at 4 MiB';
  const m = topMount(parseMountInfo(mountinfo), '/dev');
  if (!m) return { name, ok: true, detail: 'not a mount point (part of the read-only root)' };
  const nosuid = m.options.includes('nosuid');
  const locked = m.options.includes('noexec') || m.options.includes('ro');
  const size = m.fsType === 'tmpfs' ? tmpfsSizeBytes(m) : undefined;
  const capped = size !== undefined && size <= DEV_TMPFS_MAX_BYTES;
  const ok = nosuid && (locked || capped);
  const why = !nosuid
    ? 'missing nosuid: '
    : locked
      ? ''
      : capped
        ? 'writable by the container root and exec allowed (nspawn offers no flag), size-capped: '
        : 'writable, exec allowed and not size-capped: ';
  return { name, ok, detail: `${why}${describeMount(m)} ${m.superOptions.join(',')}` };
}

function statusField(status: string, field: string): string | undefined {
  const m = new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(status);
  return m?.[1]?.trim();
}

export function checkNoNewPrivs(status: string): HardeningCheck {
  const v = statusField(status, 'NoNewPrivs');
  return { name: 'NoNewPrivs set', ok: v === '1', detail: `NoNewPrivs: ${v ?? '(missing)'}` };
}

export const CAP_NET_ADMIN = 12;
export const CAP_SYS_ADMIN = 21;

export function checkCapabilities(status: string): HardeningCheck {
  const name = 'CAP_NET_ADMIN, CAP_SYS_ADMIN not in bounding set';
  const hex = statusField(status, 'CapBnd');
  if (!hex || !/^[0-9a-f]+$/i.test(hex))
    return { name, ok: false, detail: `CapBnd: ${hex ?? '(missing)'}` };
  const bnd = BigInt(`0x${hex}`);
  const present = [
    ['CAP_NET_ADMIN', CAP_NET_ADMIN],
    ['CAP_SYS_ADMIN', CAP_SYS_ADMIN],
  ].filter(([, bit]) => (bnd >> BigInt(bit!)) & 1n) as [string, number][];
  return {
    name,
    ok: present.length === 0,
    detail:
      `CapBnd: ${hex}` +
      (present.length ? `; still has ${present.map(([n]) => n).join(', ')}` : ''),
  };
}

export function checkUidMap(uidMap: string): HardeningCheck {
  const name = 'uid 0 inside is not 0 outside';
  for (const line of uidMap.split('\n')) {
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length !== 3 || f.some((n) => !Number.isFinite(n))) continue;
    const [inside, outside, count] = f as [number, number, number];
    if (inside <= 0 && 0 < inside + count) {
      const host = outside - inside;
      return {
        name,
        ok: host !== 0,
        detail:
          host === 0
            ? `uid_map ${line.trim()}: no user namespace`
            : `uid 0 → host uid ${host} (${count} ids)`,
      };
    }
  }
  return { name, ok: true, detail: 'uid 0 is not mapped (root inside has no host identity)' };
}

/** A host id as the container sees it, through a uid_map or gid_map; undefined when unmapped. */
export function insideId(map: string, hostId: number): number | undefined {
  for (const line of map.split('\n')) {
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length !== 3 || f.some((n) => !Number.isFinite(n))) continue;
    const [inside, outside, count] = f as [number, number, number];
    if (hostId >= outside && hostId < outside + count) return hostId - outside + inside;
  }
  return undefined;
}

/**
 * The payload runs as service.user: real, effective, saved and file-system uid and gid, and the
 * supplementary groups, as the container sees them (status shows host ids; the maps translate).
 */
export function checkUser(
  status: string,
  uidMap: string,
  gidMap: string,
  want: { name: string; uid: number; gid: number; groups: readonly number[] },
): HardeningCheck {
  const name = `payload runs as ${want.name} (uid ${want.uid}, gid ${want.gid})`;
  const ids = (field: string, map: string) =>
    (statusField(status, field) ?? '')
      .split(/\s+/)
      .filter(Boolean)
      .map((v) => insideId(map, Number(v)));
  const uids = ids('Uid', uidMap);
  const gids = ids('Gid', gidMap);
  const groups = ids('Groups', gidMap);
  const show = (l: (number | undefined)[]) => l.map((v) => v ?? 'unmapped').join(' ');
  const sameSet = (a: (number | undefined)[], b: readonly number[]) =>
    a.length === new Set(b).size && a.every((g) => g !== undefined && b.includes(g));
  const ok =
    uids.length === 4 &&
    uids.every((u) => u === want.uid) &&
    gids.length === 4 &&
    gids.every((g) => g === want.gid) &&
    sameSet(groups, want.groups);
  return {
    name,
    ok,
    detail: `Uid: ${show(uids)}; Gid: ${show(gids)}; Groups: ${show(groups) || '(none)'}`,
  };
}

export function interfaces(netDev: string): string[] {
  return netDev
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0]!.trim())
    .filter(Boolean);
}

export function checkNetwork(netDev: string): HardeningCheck {
  const names = interfaces(netDev);
  const others = names.filter((n) => n !== 'lo');
  return {
    name: 'no network interface but lo',
    ok: others.length === 0,
    detail: `interfaces: ${names.join(', ') || '(none)'}`,
  };
}

/**
 * The systemd runtime's counterpart of checkUidMap: PrivateUsers= maps root and the unit's user to
 * themselves by design, so uid 0 is 0 outside; what matters is that the payload is not root there
 * and holds no capability to become it (empty bounding set, NoNewPrivs).
 */
export function checkNotHostRoot(status: string): HardeningCheck {
  const name = 'not root on the host, no way to become it';
  const uids = (statusField(status, 'Uid') ?? '').split(/\s+/).filter(Boolean).map(Number);
  const bnd = statusField(status, 'CapBnd') ?? '';
  const nnp = statusField(status, 'NoNewPrivs');
  const noCaps = /^[0-9a-f]+$/i.test(bnd) && BigInt(`0x${bnd}`) === 0n;
  const ok = uids.length === 4 && uids.every((u) => u !== 0) && noCaps && nnp === '1';
  return {
    name,
    ok,
    detail: `host uids ${uids.join('/') || '(missing)'}, CapBnd ${bnd || '(missing)'}, NoNewPrivs ${nnp ?? '(missing)'}`,
  };
}

/** Soft and hard value of one /proc/PID/limits row ("unlimited" is Infinity). */
function limitRow(limits: string, row: string): [number, number] | undefined {
  const line = limits.split('\n').find((l) => l.startsWith(row));
  const f = line?.slice(row.length).trim().split(/\s+/);
  if (!f || f.length < 2) return undefined;
  const n = (v: string) => (v === 'unlimited' ? Infinity : Number(v));
  return [n(f[0]!), n(f[1]!)];
}

/** The payload's open-files and process rlimits are at most service.limits (nspawn --rlimit). */
export function checkRlimits(
  limits: string,
  want: { nofile: number; tasks: number },
): HardeningCheck {
  const name = `open files ≤ ${want.nofile}, processes ≤ ${want.tasks}`;
  const files = limitRow(limits, 'Max open files');
  const procs = limitRow(limits, 'Max processes');
  const show = (v: [number, number] | undefined) => (v ? `${v[0]}/${v[1]}` : '(missing)');
  const ok =
    !!files && !!procs && Math.max(...files) <= want.nofile && Math.max(...procs) <= want.tasks;
  return { name, ok, detail: `open files ${show(files)}, processes ${show(procs)} (soft/hard)` };
}

/**
 * Everything the payload's /proc says, as check rows; the rlimit row when limits are given, the
 * user row when service.user's ids are.
 */
export async function inspectProcess(
  pid: number,
  dataPath: string,
  limits?: { nofile: number; tasks: number },
  runAs?: RunAs,
  /** `unprivileged-user`: the systemd runtime's payload, checked by checkNotHostRoot(). */
  identity: 'user-namespace' | 'unprivileged-user' = 'user-namespace',
): Promise<HardeningCheck[]> {
  const read = (f: string) => readFile(`/proc/${pid}/${f}`, 'utf8');
  const [mountinfo, status, uidMap, gidMap, netDev, rlimits] = await Promise.all([
    read('mountinfo'),
    read('status'),
    read('uid_map'),
    read('gid_map'),
    read('net/dev'),
    read('limits'),
  ]);
  return [
    checkRootReadOnly(mountinfo),
    checkDataMount(mountinfo, dataPath),
    ...SCRATCH_PATHS.map((p) => checkScratchMount(mountinfo, p)),
    checkDevMount(mountinfo),
    checkNetwork(netDev),
    checkNoNewPrivs(status),
    checkCapabilities(status),
    identity === 'user-namespace' ? checkUidMap(uidMap) : checkNotHostRoot(status),
    ...(limits ? [checkRlimits(rlimits, limits)] : []),
    ...(runAs ? [checkUser(status, uidMap, gidMap, runAs)] : []),
  ];
}

/** Names of shells and script interpreters; an image should carry none but its service's own. */
export const INTERPRETER_NAME =
  /^(sh|bash|rbash|dash|ash|zsh|ksh|ksh93|mksh|csh|tcsh|fish|busybox|toybox|python[\d.]*m?|perl[\d.]*|lua[\d.]*|luajit[\d.-]*|ruby[\d.]*|node|nodejs|php[\d.]*|tclsh[\d.]*|wish[\d.]*)$/;

export interface ImageEntry {
  /** Absolute path inside the image. */
  path: string;
  kind: 'file' | 'dir' | 'symlink' | 'other';
  executable: boolean;
  /** Symlink target as stored. */
  target?: string;
}

/**
 * Every entry of a mounted image (symlinks not followed), listed by a privileged `find` so a
 * non-root caller also sees into 0700 directories (/root, /var/cache/ldconfig) where an
 * interpreter could hide. NUL-separated, so no file name can break the parsing.
 */
export async function listImage(root: string, logger?: Logger): Promise<ImageEntry[]> {
  const r = await run(['find', root, '-mindepth', '1', '-printf', '%y\\0%m\\0%P\\0%l\\0'], {
    privileged: true,
    binary: true,
    logger,
    timeoutMs: 5 * 60_000,
  });
  return parseFindListing(r.stdoutBytes);
}

/** Parses `find -printf '%y\0%m\0%P\0%l\0'` output. */
export function parseFindListing(bytes: Buffer): ImageEntry[] {
  const f = bytes.toString('utf8').split('\0');
  const out: ImageEntry[] = [];
  for (let i = 0; i + 3 < f.length; i += 4) {
    const [type, mode, rel, target] = [f[i]!, f[i + 1]!, f[i + 2]!, f[i + 3]!];
    const p = `/${rel}`;
    if (type === 'd') out.push({ path: p, kind: 'dir', executable: false });
    else if (type === 'l') out.push({ path: p, kind: 'symlink', executable: false, target });
    else
      out.push({
        path: p,
        kind: type === 'f' ? 'file' : 'other',
        executable: (parseInt(mode, 8) & 0o111) !== 0,
      });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Resolves a path inside the image, chroot-style (never through the host's /). */
export function resolveInImage(entries: Map<string, ImageEntry>, p: string, depth = 0): string {
  const parts = p.split('/').filter((s) => s && s !== '.');
  let cur = '/';
  for (let i = 0; i < parts.length; i++) {
    if (parts[i] === '..') {
      cur = path.posix.dirname(cur);
      continue;
    }
    const next = path.posix.join(cur, parts[i]!);
    const e = entries.get(next);
    if (e?.kind === 'symlink' && depth < 40) {
      // join() clamps ".." at "/", which is what a chroot does.
      const target = e.target!.startsWith('/') ? e.target! : path.posix.join(cur, e.target!);
      const rest = parts.slice(i + 1).join('/');
      return resolveInImage(entries, rest ? `${target}/${rest}` : target, depth + 1);
    }
    cur = next;
  }
  return cur;
}

/**
 * The `#!` interpreters the kernel runs for command[0] in a mounted image: for a script such as
 * pygopherd's (`#!/usr/bin/python3`) or a BusyBox sh service, the interpreter is the service.
 * Follows nested `#!` lines up to the kernel's depth; [] for an ELF entrypoint.
 */
export function entrypointInterpreters(root: string, command0: string): string[] {
  const chain: string[] = [];
  for (let cur = command0; chain.length < 4;) {
    let next: string | undefined;
    try {
      const r = resolveInRoot(root, cur);
      next = r.exists ? shebang(r.host) : undefined;
    } catch {
      next = undefined;
    }
    if (next === undefined || next === command0 || chain.includes(next)) break;
    chain.push(next);
    cur = next;
  }
  return chain;
}

/**
 * No shell or interpreter in the image except the service's own entrypoint (`command[0]`, its
 * `#!` interpreters, and whatever they are symlinks to). Symlinks count when their name looks
 * like an interpreter and they do not resolve to the service's own.
 */
export function checkNoInterpreters(
  entries: ImageEntry[],
  command0: string,
  interpreters: readonly string[] = [],
): HardeningCheck {
  const name = 'no shell or interpreter but the service';
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const ownPaths = [command0, ...interpreters];
  const own = new Set(ownPaths.map((p) => resolveInImage(byPath, p)));
  const found: string[] = [];
  for (const e of entries) {
    if (e.kind === 'dir' || !INTERPRETER_NAME.test(path.posix.basename(e.path))) continue;
    if (e.kind === 'file' && !e.executable) continue;
    if (ownPaths.includes(e.path) || own.has(resolveInImage(byPath, e.path))) continue;
    found.push(e.kind === 'symlink' ? `${e.path} -> ${e.target}` : e.path);
  }
  return {
    name,
    ok: found.length === 0,
    detail: found.length
      ? `found ${found.join(', ')}`
      : `${entries.length} entries; only ${ownPaths.join(' and its interpreter ')}`,
  };
}
