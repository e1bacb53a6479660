/**
 * Prune: a new root holding only what the traced run proves the service needs, and the closure
 * that makes those files work: every symlink on their paths, parent directories with their
 * modes, the ELF interpreter and DT_NEEDED libraries of every kept ELF (transitively, resolved in
 * the root's own library dirs), the entrypoint, the mount points, plus `keep` minus `drop`.
 * Anything under the data path goes to the data template instead of the image, and the trace
 * mount point never makes it in.
 */
import { lstatSync, readdirSync, type Stats } from 'node:fs';
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
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { readElf, type ElfInfo } from '../elf/elf.js';
import { libraryDirs, shebang } from '../elf/loader.js';
import { TRACE_MOUNT } from '../tools/nspawn.js';
import { globMatcher } from '../root/glob.js';
import { isUnder, resolveTraced, type EntryKind } from '../root/lookup.js';
import { seedDataDir, type TraceResult } from './trace.js';

export type KeepReason =
  | 'traced-open'
  | 'traced-exec'
  | 'dir-listing'
  | 'symlink-on-path'
  | 'elf-interp'
  | 'dt-needed'
  | 'entrypoint'
  | 'mount-point'
  | 'keep-glob'
  | 'parent-dir'
  | 'shebang-interp';

export interface KeptEntry {
  path: string;
  kind: EntryKind;
  /** Octal permission bits, e.g. "0755". */
  mode: string;
  bytes: number;
  why: KeepReason[];
}

export interface TraceReport {
  name: string;
  emulated: boolean;
  traceSeconds: number;
  base: { entries: number; bytes: number };
  kept: { entries: number; bytes: number; list: KeptEntry[] };
  dropped: { entries: number; bytes: number };
  /** Paths the service looked up and did not find (ENOENT): a hint when the image misbehaves. */
  failedLookups: string[];
  writtenUnderData: string[];
  writtenOutsideData: string[];
  /** DT_NEEDED names no library dir of the root provides. */
  missingLibraries: { elf: string; needed: string }[];
  /** Entries the trace or closure wanted but a `drop` pattern removed. */
  droppedByConfig: string[];
}

export interface PruneResult {
  prunedRoot: string;
  /** The data template's directory (the root's data path plus data.template). */
  dataDir: string;
  report: TraceReport;
}

export interface PruneOptions {
  /** Where `root/` (the pruned root) and `data/` are written; replaced if present. */
  outDir: string;
  logger: Logger;
}

/** Mount points every image carries as (empty) directories. */
export function mountPoints(config: LhcConfig): string[] {
  return [...new Set([config.data.path, '/proc', '/sys', '/dev', '/run', '/tmp', '/usr'])];
}

interface WalkEntry {
  kind: EntryKind;
  st: Stats;
}

/** Every entry of the root, by in-root path (the root itself is '/'). */
function walkRoot(root: string): Map<string, WalkEntry> {
  const out = new Map<string, WalkEntry>();
  const visit = (inRoot: string) => {
    const host = path.join(root, inRoot);
    const st = lstatSync(host);
    const kind: EntryKind = st.isSymbolicLink()
      ? 'symlink'
      : st.isDirectory()
        ? 'dir'
        : st.isFile()
          ? 'file'
          : 'other';
    out.set(inRoot, { kind, st });
    if (kind === 'dir') {
      for (const name of readdirSync(host).sort())
        visit(inRoot === '/' ? `/${name}` : `${inRoot}/${name}`);
    }
  };
  visit('/');
  return out;
}

function entryBytes(e: WalkEntry): number {
  return e.kind === 'file' || e.kind === 'symlink' ? e.st.size : 0;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Ops whose path names something the service needs to find again. */
const READ_OPS = new Set(['open', 'exec', 'stat', 'access', 'readlink', 'chdir', 'getdents']);

export async function pruneRoot(
  root: string,
  trace: TraceResult,
  config: LhcConfig,
  opts: PruneOptions,
): Promise<PruneResult> {
  const { logger } = opts;
  const all = walkRoot(root);
  const kept = new Map<string, Set<KeepReason>>();
  const dataPath = config.data.path;
  const excluded = (p: string) => isUnder(p, dataPath) || isUnder(p, TRACE_MOUNT);
  const add = (p: string, why: KeepReason) => {
    if (excluded(p) || !all.has(p)) return false;
    let s = kept.get(p);
    if (!s) kept.set(p, (s = new Set()));
    s.add(why);
    return true;
  };
  /** Keeps what a lookup of guestPath reaches, and every symlink it walks through. */
  const addLookup = (guestPath: string, why: KeepReason, noFollow = false) => {
    const r = resolveTraced(root, guestPath, { noFollow });
    for (const l of r.symlinks) add(l.path, 'symlink-on-path');
    if (r.exists && !r.virtual) add(r.inRoot, why);
    return r;
  };

  for (const e of trace.events) {
    if (!READ_OPS.has(e.op) && !(e.write && e.result === 'ok')) continue;
    // A lookup that found nothing needs nothing; any other result (even EACCES) met a real file.
    if (e.result === 'error' && (e.errno === 2 || e.errno === 20)) continue;
    if (e.syscall === 'entrypoint' || e.syscall === 'pt-interp') continue;
    const r = addLookup(
      e.path,
      e.op === 'exec' ? 'traced-exec' : 'traced-open',
      e.noFollow ?? false,
    );
    if (e.op === 'getdents' && r.exists && r.kind === 'dir' && !r.virtual) {
      // The service saw this listing; the pruned root must show the same names.
      for (const name of readdirSync(r.host)) add(path.posix.join(r.inRoot, name), 'dir-listing');
    }
  }
  const entry = addLookup(trace.entrypoint, 'entrypoint');
  if (!entry.exists)
    throw new UserError(`the entrypoint ${trace.entrypoint} does not exist in the root ${root}`);
  if (trace.interp) addLookup(trace.interp, 'elf-interp');

  if (config.keep.length > 0) {
    const keepMatch = globMatcher(config.keep);
    for (const p of all.keys()) if (keepMatch(p)) add(p, 'keep-glob');
  }

  // ELF closure: interpreter and DT_NEEDED of every kept ELF, transitively.
  const missingLibraries: { elf: string; needed: string }[] = [];
  const scanned = new Set<string>();
  for (let changed = true; changed;) {
    changed = false;
    for (const p of [...kept.keys()]) {
      if (scanned.has(p) || all.get(p)?.kind !== 'file') continue;
      scanned.add(p);
      let elf: ElfInfo | undefined;
      try {
        elf = await readElf(path.join(root, p));
      } catch (err) {
        logger.debug(`not parsing ${p} as ELF: ${(err as Error).message}`);
        continue;
      }
      if (!elf) {
        // An executed script: the kernel starts its #! interpreter, which QEMU never logs.
        const why = kept.get(p)!;
        // Only scripts that were run: a kept text file that happens to start with #! must not
        // drag a shell into the image.
        if (why.has('entrypoint') || why.has('traced-exec')) {
          const interpreter = shebang(path.join(root, p));
          if (interpreter) {
            const r = addLookup(interpreter, 'shebang-interp');
            if (r.exists) changed = true;
            else missingLibraries.push({ elf: p, needed: interpreter });
          }
        }
        continue;
      }
      if (elf.interp) {
        const r = addLookup(elf.interp, 'elf-interp');
        if (r.exists) changed = true;
        else missingLibraries.push({ elf: p, needed: elf.interp });
      }
      const dirs = elf.needed.length > 0 ? libraryDirs(root, elf, p) : [];
      for (const lib of elf.needed) {
        const candidates = lib.includes('/')
          ? [lib.startsWith('/') ? lib : path.posix.join(path.posix.dirname(p), lib)]
          : dirs.map((d) => path.posix.join(d, lib));
        const hit = candidates.find((c) => {
          const r = resolveTraced(root, c);
          return r.exists && r.kind === 'file';
        });
        if (hit === undefined) {
          missingLibraries.push({ elf: p, needed: lib });
          continue;
        }
        addLookup(hit, 'dt-needed');
        changed = true;
      }
    }
  }
  for (const m of missingLibraries)
    logger.warn(`${m.elf} needs ${m.needed}, which is not in the root's library dirs`);

  const droppedByConfig: string[] = [];
  if (config.drop.length > 0) {
    const dropMatch = globMatcher(config.drop);
    for (const p of [...kept.keys()]) {
      if (dropMatch(p)) {
        kept.delete(p);
        droppedByConfig.push(p);
      }
    }
  }

  // Parent directories of everything kept, with their own modes.
  for (const p of [...kept.keys()]) {
    for (let d = path.posix.dirname(p); d !== '/' && d !== '.'; d = path.posix.dirname(d)) {
      if (kept.has(d)) {
        kept.get(d)!.add('parent-dir');
        continue;
      }
      add(d, 'parent-dir');
    }
  }
  kept.delete('/');

  // Mount points: empty directories, the root's own mode when it has one.
  const mounts = mountPoints(config);

  // Write the pruned root.
  const prunedRoot = path.join(opts.outDir, 'root');
  const dataDir = path.join(opts.outDir, 'data');
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

  await seedDataDir(config, root, dataDir);

  let baseBytes = 0;
  for (const e of all.values()) baseBytes += entryBytes(e);
  const keptPaths = new Set(list.map((k) => k.path));
  let droppedEntries = 0;
  let droppedBytes = 0;
  for (const [p, e] of all) {
    if (p === '/' || keptPaths.has(p)) continue;
    droppedEntries++;
    droppedBytes += entryBytes(e);
  }
  const keptBytes = list.reduce((s, k) => s + k.bytes, 0);
  const report: TraceReport = {
    name: config.name,
    emulated: trace.emulated,
    traceSeconds: trace.seconds,
    base: { entries: all.size - 1, bytes: baseBytes },
    kept: { entries: list.length, bytes: keptBytes, list },
    dropped: { entries: droppedEntries, bytes: droppedBytes },
    failedLookups: trace.failedLookups,
    writtenUnderData: trace.writtenUnderData,
    writtenOutsideData: trace.writtenOutsideData,
    missingLibraries,
    droppedByConfig: droppedByConfig.sort(),
  };
  logger.info(summarizeReport(report));
  return { prunedRoot, dataDir, report };
}

function human(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** A few lines for a terminal or a job summary. */
export function summarizeReport(r: TraceReport): string {
  const pct = r.base.bytes > 0 ? ((100 * r.kept.bytes) / r.base.bytes).toFixed(1) : '0';
  const byReason = new Map<string, number>();
  for (const k of r.kept.list) for (const w of k.why) byReason.set(w, (byReason.get(w) ?? 0) + 1);
  const lines = [
    `pruned ${r.name}: kept ${r.kept.entries} of ${r.base.entries} entries, ${human(r.kept.bytes)} of ${human(r.base.bytes)} (${pct} %); dropped ${r.dropped.entries} entries, ${human(r.dropped.bytes)}`,
    `kept because: ${[...byReason]
      .sort()
      .map(([w, n]) => `${w} ${n}`)
      .join(', ')}`,
    `trace: ${r.traceSeconds.toFixed(1)} s (${r.emulated ? 'QEMU_STRACE' : 'host strace'}), ${r.failedLookups.length} failed lookup(s), ${r.writtenUnderData.length} path(s) written under the data path`,
  ];
  if (r.writtenOutsideData.length > 0)
    lines.push(
      `written outside the data path (read-only on the board): ${r.writtenOutsideData.join(', ')}`,
    );
  if (r.missingLibraries.length > 0)
    lines.push(
      `missing libraries: ${r.missingLibraries.map((m) => `${m.needed} (for ${m.elf})`).join(', ')}`,
    );
  return lines.join('\n');
}

/** Writes the report as JSON (stable key order, one entry a line in `list`). */
export async function writeTraceReport(report: TraceReport, file: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(
    file,
    `${JSON.stringify({ ...report, summary: summarizeReport(report) }, null, 2)}\n`,
  );
}
