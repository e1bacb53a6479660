/**
 * Copies host files into a root. Destinations are resolved chroot-style (src/root/resolve.ts):
 * a base root may hold absolute symlinks such as `/var/run -> /run`, and following them with host
 * path functions would write into the host's own /run.
 */
import {
  constants as fsc,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  chmodSync,
  lchownSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import { resolveInRoot } from './resolve.js';

function hostPathFor(root: string, dst: string): { host: string; inRoot: string } {
  const dir = path.posix.dirname(dst);
  const parent = resolveInRoot(root, dir, { createMissing: true });
  if (!parent.exists) mkdirSync(parent.host, { mode: 0o755 });
  else if (!lstatSync(parent.host).isDirectory())
    throw new UserError(`cannot install ${dst}: ${parent.inRoot} in the root is not a directory`);
  const name = path.posix.basename(dst);
  return { host: path.join(parent.host, name), inRoot: path.posix.join(parent.inRoot, name) };
}

/** Removes what is at `host` unless it is a directory (the caller's dst then names a directory). */
function clearForFile(host: string, dst: string): void {
  let st;
  try {
    st = lstatSync(host);
  } catch {
    return;
  }
  if (st.isDirectory())
    throw new UserError(`cannot install ${dst}: a directory already exists there in the root`);
  rmSync(host, { force: true });
}

/** Installs one regular file at `dst` (an absolute path in the root), root-owned, with `mode`. */
export async function installFile(
  root: string,
  src: string,
  dst: string,
  mode: number,
): Promise<void> {
  const { host } = hostPathFor(root, dst);
  clearForFile(host, dst);
  // O_EXCL|O_NOFOLLOW: the name was just cleared; never write through a link that appeared since.
  const fh = await open(host, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    const src_ = await open(src, 'r');
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const { bytesRead } = await src_.read(buf, 0, buf.length);
        if (bytesRead === 0) break;
        await fh.write(buf, 0, bytesRead);
      }
    } finally {
      await src_.close();
    }
    if (process.getuid?.() === 0) await fh.chown(0, 0);
    // setuid/setgid never enter a hardened image, whatever the config asks for.
    await fh.chmod(mode & 0o1777);
  } finally {
    await fh.close();
  }
}

/** Makes sure `dst` is a directory in the root (creating parents) and returns its host path. */
export function ensureDir(root: string, dst: string, mode = 0o755): string {
  const r = resolveInRoot(root, dst, { createMissing: true });
  if (!r.exists) {
    mkdirSync(r.host, { mode });
    chmodSync(r.host, mode);
  } else if (!lstatSync(r.host).isDirectory()) {
    throw new UserError(
      `cannot create directory ${dst}: ${r.inRoot} in the root exists and is not a directory`,
    );
  }
  return r.host;
}

export interface CopyStats {
  files: number;
  dirs: number;
  symlinks: number;
}

/**
 * The mode an overlay entry gets when the config names none: what git would check out (0755 when
 * the source is executable by anyone, else 0644; directories 0755). A checkout's modes depend on
 * the umask of whoever cloned it, and the image must not.
 */
export function normalizedMode(st: { mode: number; isDirectory(): boolean }): number {
  if (st.isDirectory()) return 0o755;
  return st.mode & 0o111 ? 0o755 : 0o644;
}

/**
 * Copies the contents of host directory `srcDir` into `dst` in the root, merging with what is
 * there. Modes are normalized (normalizedMode); symlinks are copied verbatim; owners become root.
 */
export async function copyTree(
  root: string,
  srcDir: string,
  dst: string,
  stats: CopyStats = { files: 0, dirs: 0, symlinks: 0 },
): Promise<CopyStats> {
  // A directory the base already has keeps its mode (/tmp stays 1777); a new one gets 0755.
  ensureDir(root, dst, 0o755);
  for (const name of readdirSync(srcDir).sort()) {
    const src = path.join(srcDir, name);
    const to = path.posix.join(dst, name);
    const st = lstatSync(src);
    if (st.isDirectory()) {
      stats.dirs++;
      await copyTree(root, src, to, stats);
    } else if (st.isFile()) {
      stats.files++;
      await installFile(root, src, to, normalizedMode(st));
    } else if (st.isSymbolicLink()) {
      const { host } = hostPathFor(root, to);
      clearForFile(host, to);
      symlinkSync(readlinkSync(src), host);
      if (process.getuid?.() === 0) lchownSync(host, 0, 0);
      stats.symlinks++;
    } else {
      throw new UserError(
        `cannot copy ${src} into the root: only files, directories and symlinks are supported`,
      );
    }
  }
  return stats;
}
