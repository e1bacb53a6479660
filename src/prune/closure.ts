/**
 * The closure of a traced run: what the service touched, and what makes those files work:
 * every symlink on their paths, parent directories, the ELF interpreter and DT_NEEDED libraries
 * of every kept ELF (transitively, in the root's own library dirs), a run script's `#!`
 * interpreter, the entrypoint, plus `keep` minus `drop`. Nothing under the data path or the
 * trace mount point.
 */
import { lstatSync, readdirSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { readElf, type ElfInfo } from '../elf/elf.js';
import { libraryDirs, shebang } from '../elf/loader.js';
import { globMatcher } from '../root/glob.js';
import { isUnder, resolveTraced, type EntryKind } from '../root/lookup.js';
import type { TraceResult } from '../stages/trace.js';
import { TRACE_MOUNT } from '../tools/nspawn.js';
import { isRootUser } from '../service-user/passwd.js';
import { RUN_AS_PATH } from '../service-user/run-as-elf.js';
import { ACCEPT_PATH, needsAcceptLoop } from '../accept/accept-elf.js';

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
  | 'shebang-interp'
  | 'service-user'
  | 'accept-loop';

export interface WalkEntry {
  kind: EntryKind;
  st: Stats;
}

/** Every entry of the root, by in-root path (the root itself is '/'). */
export function walkRoot(root: string): Map<string, WalkEntry> {
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

export function entryBytes(e: WalkEntry): number {
  return e.kind === 'file' || e.kind === 'symlink' ? e.st.size : 0;
}

/** Ops whose path names something the service needs to find again. */
const READ_OPS = new Set(['open', 'exec', 'stat', 'access', 'readlink', 'chdir', 'getdents']);

export interface Closure {
  /** In-root path → why it is kept ('/' itself excluded). */
  kept: Map<string, Set<KeepReason>>;
  /** DT_NEEDED (or interpreter) names no library dir of the root provides. */
  missingLibraries: { elf: string; needed: string }[];
  /** Entries the trace or closure wanted but a `drop` pattern removed. */
  droppedByConfig: string[];
}

export async function computeClosure(
  root: string,
  all: Map<string, WalkEntry>,
  trace: TraceResult,
  config: LhcConfig,
  logger: Logger,
): Promise<Closure> {
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
  // lhc-run-as starts every container run and QEMU never logs the first exec: keep it by name.
  if (!isRootUser(config.service.user)) addLookup(RUN_AS_PATH, 'service-user');
  // The board's unit starts it (systemd runtime, warm containers); no traced run does.
  if (needsAcceptLoop(config)) addLookup(ACCEPT_PATH, 'accept-loop');

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
      // A file kept only because its name was in a listing was never loaded: its libraries are
      // not needed (Python lists lib-dynload and keeps every extension module's name; the
      // libraries of the ones it never imported, libsqlite3 or libdb, would follow otherwise).
      const reasons = kept.get(p)!;
      if (reasons.size === 1 && reasons.has('dir-listing')) continue;
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

  return { kept, missingLibraries, droppedByConfig: droppedByConfig.sort() };
}
