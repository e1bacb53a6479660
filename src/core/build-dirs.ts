/**
 * Which directories a build (running as root) may write into and remove from: the out dir and the
 * work dir. lhc refuses system directories and the project itself, and it only replaces or removes
 * entries it made: a directory holds a marker (`.lhc-out`, `.lhc-work`) once lhc has claimed it,
 * and an unmarked directory that already holds one of the names lhc would replace is refused
 * unless the user passes --force (action input `force`).
 */
import { lstat, mkdir, readdir, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from './errors.js';
import type { Logger } from './logger.js';
import { STAGING_PREFIX, writeExclusive } from './safe-write.js';

export type DirFlag = '--out' | '--work-dir';

export const OUT_MARKER = '.lhc-out';
export const WORK_MARKER = '.lhc-work';

/** Top-level trees where neither they nor their direct children may be an out or work dir. */
const SYSTEM_TOP = [
  'bin',
  'boot',
  'dev',
  'etc',
  'proc',
  'root',
  'run',
  'sbin',
  'sys',
  'usr',
  'var',
];
/** Kernel views: nothing below them is a directory to build in. */
const KERNEL_TREES = ['/proc', '/sys', '/dev'];

const within = (root: string, p: string): boolean => {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

/** Why `abs` (absolute, normalized) may not be an out or work dir, or undefined. */
export function systemDirProblem(abs: string, home = os.homedir()): string | undefined {
  if (abs === '/') return 'it is the file system root';
  const parts = abs.split('/').filter(Boolean);
  const top = parts[0]!;
  if (KERNEL_TREES.some((t) => within(t, abs))) return `it is inside ${'/' + top}`;
  if ((SYSTEM_TOP.includes(top) || top.startsWith('lib')) && parts.length <= 2)
    return 'it is a system directory';
  if (abs === '/tmp') return 'it is /tmp itself (use a directory inside it)';
  if (home && home !== '/' && abs === path.resolve(home)) return 'it is your home directory';
  return undefined;
}

/** Realpath of `p`, or for a path that does not exist yet that of its deepest existing ancestor plus the rest. */
async function realish(p: string): Promise<string> {
  const rest: string[] = [];
  for (let cur = p; ; cur = path.dirname(cur)) {
    try {
      return path.join(await realpath(cur), ...rest.reverse());
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || cur === path.dirname(cur)) throw e;
      rest.push(path.basename(cur));
    }
  }
}

export interface DirCheckOptions {
  /** The config's project root (projectRoot()) and its own directory: never a build dir. */
  projectRoot: string;
  configDir: string;
  home?: string;
}

/** Refuses `dir` for `flag` when it (or what its symlinks lead to) is a system dir or the project. */
export async function checkBuildDir(flag: DirFlag, dir: string, o: DirCheckOptions): Promise<void> {
  const abs = path.resolve(dir);
  const real = await realish(abs);
  for (const p of new Set([abs, real])) {
    const why = systemDirProblem(p, o.home);
    const shown = p === abs ? abs : `${abs} (which resolves to ${real})`;
    if (why) throw new UserError(`${flag} ${shown}: refused, ${why}`, { exitCode: 2 });
  }
  const projects = new Set([path.resolve(o.projectRoot), await realish(o.configDir)]);
  if (projects.has(real) || projects.has(abs))
    throw new UserError(
      `${flag} ${abs}: refused, it is the config's project root; use a directory inside it (e.g. out/)`,
      { exitCode: 2 },
    );
}

export interface DirClaim {
  dir: string;
  /** lhc created the directory itself (so it may remove it whole). */
  created: boolean;
  marker: string;
  /** Entries lhc will replace that it did not write (only with force). */
  forced: string[];
}

/**
 * Checks, without writing anything, that lhc may replace `owned` (names inside `dir`): yes when
 * `dir` does not exist yet, holds `marker`, holds none of them, or `force` is set.
 */
export async function inspectBuildDir(
  flag: DirFlag,
  dir: string,
  o: { marker: string; owned: readonly string[]; force: boolean },
): Promise<DirClaim> {
  const abs = path.resolve(dir);
  const st = await lstat(abs).catch(() => undefined);
  const claim = { dir: abs, created: st === undefined, marker: o.marker, forced: [] as string[] };
  if (!st) return claim;
  const real = await realpath(abs);
  if (!(await lstat(real)).isDirectory())
    throw new UserError(`${flag} ${abs}: not a directory`, { exitCode: 2 });
  if (await lstat(path.join(abs, o.marker)).catch(() => undefined)) return claim;
  const present = new Set(await readdir(abs));
  const foreign = o.owned.filter((n) => present.has(n));
  if (foreign.length === 0) return claim;
  if (!o.force)
    throw new UserError(
      `${flag} ${abs} already holds ${foreign.join(', ')}, which lhc did not write there (no ${o.marker}) ` +
        `and would replace or remove: choose a new or empty directory, or pass --force ` +
        `(action input force: true) to replace them`,
      { exitCode: 2 },
    );
  return { ...claim, forced: foreign };
}

/** Creates the directory if needed and marks it as lhc's; clears staging dirs a killed run left. */
export async function claimBuildDir(c: DirClaim, logger: Logger): Promise<void> {
  await mkdir(c.dir, { recursive: true });
  if (c.forced.length > 0)
    logger.warn(`--force: replacing ${c.forced.join(', ')} in ${c.dir}, which lhc did not write`);
  const markerPath = path.join(c.dir, c.marker);
  const marker = await lstat(markerPath).catch(() => undefined);
  if (!marker)
    await writeExclusive(markerPath, 'written by lhc: its outputs here may be replaced\n');
  else if (!marker.isFile())
    throw new UserError(`${markerPath} is not a regular file: move it away`, { exitCode: 2 });
  for (const e of await readdir(c.dir))
    if (e.startsWith(STAGING_PREFIX))
      await rm(path.join(c.dir, e), { recursive: true, force: true });
}

/** What lhc creates in a work dir (core/work-layout.ts), and so may replace or remove there. */
export const WORK_DIR_ENTRIES = ['root', 'trace', 'pruned', 'self-check', 'lua', 'verify'];

export interface BuildDirsOptions {
  outDir: string;
  workDir?: string;
  force: boolean;
  /** Every name lhc writes in the out dir (artifacts, trace report, SHA256SUMS, deploy). */
  outputNames: readonly string[];
  projectRoot: string;
  configDir: string;
}

export interface BuildDirs {
  out: DirClaim;
  work?: DirClaim;
}

/** Checks both dirs before either is created, so a refusal leaves nothing behind. */
export async function inspectBuildDirs(o: BuildDirsOptions): Promise<BuildDirs> {
  const where = { projectRoot: o.projectRoot, configDir: o.configDir };
  await checkBuildDir('--out', o.outDir, where);
  if (o.workDir !== undefined) await checkBuildDir('--work-dir', o.workDir, where);
  const out = await inspectBuildDir('--out', o.outDir, {
    marker: OUT_MARKER,
    owned: o.outputNames,
    force: o.force,
  });
  if (o.workDir === undefined) return { out };
  const work = await inspectBuildDir('--work-dir', o.workDir, {
    marker: WORK_MARKER,
    owned: WORK_DIR_ENTRIES,
    force: o.force,
  });
  return { out, work };
}

export async function claimBuildDirs(d: BuildDirs, logger: Logger): Promise<void> {
  await claimBuildDir(d.out, logger);
  if (d.work) await claimBuildDir(d.work, logger);
}

/** What removing the work dir removes: all of it if lhc created it, else only lhc's entries. */
export function workDirRemovals(workDir: string, claim: DirClaim | undefined): string[] {
  if (claim === undefined || claim.created) return [workDir];
  return [...WORK_DIR_ENTRIES, WORK_MARKER].map((n) => path.join(workDir, n));
}

/**
 * A directory lhc creates for itself and removes whole afterwards (the board's work dir): it must
 * not be a system directory and must be absent or an empty directory (not a symlink), so the
 * later removal can only take what lhc put there.
 */
export async function createOwnDir(what: string, dir: string): Promise<string> {
  const abs = path.resolve(dir);
  const real = await realish(abs);
  for (const p of new Set([abs, real])) {
    const why = systemDirProblem(p);
    if (why) throw new UserError(`${what} ${abs}: refused, ${why}`, { exitCode: 2 });
  }
  await mkdir(path.dirname(abs), { recursive: true });
  try {
    await mkdir(abs);
    return abs;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const st = await lstat(abs);
  if (!st.isDirectory())
    throw new UserError(`${what} ${abs}: refused, it exists and is not a directory`, {
      exitCode: 2,
    });
  const entries = await readdir(abs);
  if (entries.length > 0)
    throw new UserError(
      `${what} ${abs}: refused, it already holds ${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', ...' : ''}, ` +
        'which lhc did not write and would remove afterwards: choose a new or empty directory',
      { exitCode: 2 },
    );
  return abs;
}

/**
 * A single file lhc writes at a path the user named (`lhc lua --out DIR`'s DIR/lua, a manifest
 * lock): refuses a target inside a system directory, so a root build never replaces host files.
 */
export async function checkOutputFileTarget(what: string, file: string): Promise<string> {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const real = await realish(dir);
  for (const p of new Set([dir, real])) {
    const why = systemDirProblem(p);
    if (why)
      throw new UserError(`${what} ${abs}: refused, its directory ${p}: ${why}`, { exitCode: 2 });
  }
  return abs;
}
