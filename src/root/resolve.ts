/**
 * Path resolution inside a root directory as if it were `/` (what a chroot or the kernel's
 * RESOLVE_IN_ROOT would do): absolute symlink targets restart at the root, `..` never climbs
 * above it, and the host's own `/` is never consulted. Extraction, the tracer and the pruner
 * all look at foreign roots full of absolute symlinks (`/bin/sh -> /bin/busybox`); resolving
 * them with host path functions would silently read or write the host's files instead.
 */
import { lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../core/errors.js';

/** Same limit as Linux (MAXSYMLINKS): a deeper chain is treated as a loop. */
export const MAX_SYMLINK_FOLLOWS = 40;

export class ResolveError extends UserError {
  constructor(
    readonly inRootPath: string,
    readonly reason: 'loop' | 'not-a-directory' | 'missing',
    message: string,
  ) {
    super(message);
  }
}

export interface ResolveOptions {
  /** Follow a symlink in the last component too (like stat, not lstat). Default true. */
  followLast?: boolean;
  /** Create missing directories along the way (mode 0755), like tar does for missing parents. */
  createMissing?: boolean;
  /** Called with the in-root path of every symlink followed (the pruner keeps them). */
  onSymlink?: (inRootPath: string, target: string) => void;
}

export interface Resolved {
  /** Canonical path inside the root, starting with `/`. */
  inRoot: string;
  /** The same place on the host: root joined with inRoot. */
  host: string;
  /** False when the last component does not exist (its parents always do when this returns). */
  exists: boolean;
}

/** Splits a path into its meaningful components ('' and '.' dropped). */
function components(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

/**
 * Resolves `p` (absolute, or relative to `cwd`, both meaning paths inside the root) to a place
 * inside `root`. Every intermediate component that exists must be a directory or a symlink
 * (followed chroot-style); a missing intermediate component is an error unless createMissing.
 */
export function resolveInRoot(
  root: string,
  p: string,
  opts: ResolveOptions = {},
  cwd = '/',
): Resolved {
  const followLast = opts.followLast ?? true;
  const start = p.startsWith('/') ? components(p) : [...components(cwd), ...components(p)];
  // Work stack of components still to walk; symlink targets are spliced in front.
  const todo = start.reverse();
  const done: string[] = [];
  let follows = 0;
  while (todo.length > 0) {
    const comp = todo.pop()!;
    if (comp === '..') {
      done.pop();
      continue;
    }
    const isLast = todo.length === 0;
    const inRoot = `/${[...done, comp].join('/')}`;
    const host = path.join(root, ...done, comp);
    let st;
    try {
      st = lstatSync(host);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (isLast) return { inRoot, host, exists: false };
      if (!opts.createMissing) {
        throw new ResolveError(
          inRoot,
          'missing',
          `${inRoot} does not exist (resolving ${p} inside the root)`,
        );
      }
      mkdirSync(host, { mode: 0o755 });
      done.push(comp);
      continue;
    }
    if (st.isSymbolicLink() && (!isLast || followLast)) {
      if (++follows > MAX_SYMLINK_FOLLOWS) {
        throw new ResolveError(
          p,
          'loop',
          `too many levels of symbolic links resolving ${p} inside the root (a symlink loop)`,
        );
      }
      const target = readlinkSync(host);
      opts.onSymlink?.(inRoot, target);
      if (target.startsWith('/')) done.length = 0;
      todo.push(...components(target).reverse());
      continue;
    }
    if (!isLast && !st.isDirectory()) {
      throw new ResolveError(
        inRoot,
        'not-a-directory',
        `${inRoot} is not a directory (resolving ${p} inside the root)`,
      );
    }
    done.push(comp);
    if (isLast) return { inRoot, host, exists: true };
  }
  // The path was the root itself (or resolved back to it).
  return { inRoot: `/${done.join('/')}`, host: path.join(root, ...done), exists: true };
}
