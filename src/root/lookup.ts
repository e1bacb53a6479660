/**
 * Where a traced path really lands inside the root, chroot-style: absolute symlinks restart at
 * the root (never the host's `/`), `..` stops at the root, and every symlink walked on the way is
 * recorded, because the pruned root needs those links too or the same lookup would fail there.
 */
import { lstatSync } from 'node:fs';
import { ResolveError, resolveInRoot } from './resolve.js';

/** Filesystems the container gets from nspawn or the board, never from the image. */
export const VIRTUAL_PREFIXES = ['/proc', '/sys', '/dev'] as const;

export type EntryKind = 'file' | 'dir' | 'symlink' | 'other';

export interface TracedPath {
  /** The canonical path inside the root, symlinks resolved (except a final one with noFollow). */
  inRoot: string;
  /** Host path of inRoot. */
  host: string;
  exists: boolean;
  kind?: EntryKind;
  /** Symlinks followed, in order, as in-root path and verbatim target. */
  symlinks: { path: string; target: string }[];
  /** Lands on /proc, /sys or /dev, which the image never carries. */
  virtual: boolean;
}

export function isUnder(p: string, dir: string): boolean {
  return dir === '/' || p === dir || p.startsWith(`${dir}/`);
}

export function isVirtual(p: string): boolean {
  return VIRTUAL_PREFIXES.some((v) => isUnder(p, v));
}

export function kindOf(host: string): EntryKind | undefined {
  try {
    const st = lstatSync(host);
    if (st.isSymbolicLink()) return 'symlink';
    if (st.isDirectory()) return 'dir';
    if (st.isFile()) return 'file';
    return 'other';
  } catch {
    return undefined;
  }
}

/**
 * Resolves `guestPath` (absolute, as the container saw it) inside `root`. Never throws for a path
 * the service merely failed to find: a missing or non-directory component, or a symlink loop,
 * gives exists: false.
 */
export function resolveTraced(
  root: string,
  guestPath: string,
  opts: { noFollow?: boolean } = {},
): TracedPath {
  const symlinks: { path: string; target: string }[] = [];
  try {
    const r = resolveInRoot(root, guestPath, {
      followLast: !opts.noFollow,
      onSymlink: (p, target) => symlinks.push({ path: p, target }),
    });
    const kind = r.exists ? kindOf(r.host) : undefined;
    return {
      inRoot: r.inRoot,
      host: r.host,
      exists: r.exists,
      ...(kind ? { kind } : {}),
      symlinks,
      virtual: isVirtual(r.inRoot),
    };
  } catch (e) {
    if (!(e instanceof ResolveError)) throw e;
    return {
      inRoot: e.inRootPath,
      host: '',
      exists: false,
      symlinks,
      virtual: isVirtual(e.inRootPath),
    };
  }
}
