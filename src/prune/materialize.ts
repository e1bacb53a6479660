/**
 * Writing the pruned root: every kept entry copied with its owner, mode and times (symlinks
 * verbatim, special files left to nspawn), then the mount points as empty directories.
 */
import { type Stats } from 'node:fs';
import {
  chmod,
  copyFile,
  lchown,
  lutimes,
  mkdir,
  readlink,
  rm,
  symlink,
  utimes,
} from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../core/logger.js';
import { entryBytes, type KeepReason, type WalkEntry } from './closure.js';
import type { KeptEntry } from './report.js';

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Writes `kept` (and `mounts`) from `root` into a fresh `prunedRoot`; returns the entries, sorted. */
export async function writePrunedRoot(
  root: string,
  all: Map<string, WalkEntry>,
  kept: Map<string, Set<KeepReason>>,
  mounts: readonly string[],
  prunedRoot: string,
  logger: Logger,
): Promise<KeptEntry[]> {
  await rm(prunedRoot, { recursive: true, force: true });
  await mkdir(prunedRoot, { recursive: true });
  const rootSt = all.get('/')!.st;
  const list: KeptEntry[] = [];
  const dirTimes: { host: string; st: Stats }[] = [];
  for (const p of [...kept.keys()].sort()) {
    const e = all.get(p)!;
    const src = path.join(root, p);
    const dst = path.join(prunedRoot, p);
    if (e.kind === 'dir') {
      await mkdir(dst);
      dirTimes.push({ host: dst, st: e.st });
    } else if (e.kind === 'file') {
      await copyFile(src, dst);
      await utimes(dst, e.st.atime, e.st.mtime);
    } else if (e.kind === 'symlink') {
      await symlink(await readlink(src), dst);
    } else {
      // Device nodes, FIFOs and sockets: nspawn provides /dev, the rest is runtime state.
      logger.debug(`not copying special file ${p}`);
      continue;
    }
    await lchown(dst, e.st.uid, e.st.gid).catch(() => undefined);
    if (e.kind !== 'symlink') await chmod(dst, e.st.mode & 0o7777);
    else await lutimes(dst, e.st.atime, e.st.mtime).catch(() => undefined);
    list.push({
      path: p,
      kind: e.kind,
      mode: octal(e.st.mode),
      bytes: entryBytes(e),
      why: [...kept.get(p)!].sort(),
    });
  }
  for (const m of mounts) {
    const dst = path.join(prunedRoot, m);
    const existing = list.find((k) => k.path === m);
    if (existing) {
      if (!existing.why.includes('mount-point')) existing.why.push('mount-point');
      continue;
    }
    const e = all.get(m);
    const mode = e?.kind === 'dir' ? e.st.mode & 0o7777 : m === '/tmp' ? 0o1777 : 0o755;
    // A nested mount point (/var/tmp) needs its parents in the image and in the list too.
    for (let parent = path.posix.dirname(m); parent !== '/'; parent = path.posix.dirname(parent)) {
      if (list.some((k) => k.path === parent)) continue;
      await mkdir(path.join(prunedRoot, parent), { recursive: true, mode: 0o755 });
      await chmod(path.join(prunedRoot, parent), 0o755);
      list.push({ path: parent, kind: 'dir', mode: octal(0o755), bytes: 0, why: ['mount-point'] });
    }
    await mkdir(path.dirname(dst), { recursive: true });
    await mkdir(dst);
    await chmod(dst, mode);
    if (e?.kind === 'dir') await lchown(dst, e.st.uid, e.st.gid).catch(() => undefined);
    list.push({ path: m, kind: 'dir', mode: octal(mode), bytes: 0, why: ['mount-point'] });
  }
  for (const { host, st } of dirTimes.reverse()) await utimes(host, st.atime, st.mtime);
  await chmod(prunedRoot, rootSt.mode & 0o7777);
  await lchown(prunedRoot, rootSt.uid, rootSt.gid).catch(() => undefined);
  list.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

  return list;
}
