/**
 * How lhc puts a file (or a directory) at a path in a directory someone else may also write to,
 * while running as root: build it in a fresh private temp dir beside the target
 * (`<dir>/.lhc-tmp-XXXXXX`, so the final rename stays on one file system), create every file
 * there with O_CREAT|O_EXCL|O_NOFOLLOW, then rename it over the target. rename() replaces a
 * symlink at the target instead of following it, so nothing is ever written through a link lhc
 * did not create; a replaced symlink or directory is reported, never silent.
 */
import { constants } from 'node:fs';
import { lstat, mkdtemp, open, readlink, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from './errors.js';
import type { Logger } from './logger.js';

/** Prefix of the staging dirs; a marked out dir may hold stale ones from a killed run. */
export const STAGING_PREFIX = '.lhc-tmp-';

const EXCLUSIVE_NOFOLLOW =
  constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Creates `file` (which must not exist, and is never followed if it is a link) holding `data`. */
export async function writeExclusive(
  file: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const fh = await open(file, EXCLUSIVE_NOFOLLOW, mode);
  try {
    await fh.writeFile(data);
    // open()'s mode is masked by the umask; the artifact's mode must not depend on the caller's.
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}

function codeOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

async function lstatOrUndefined(p: string) {
  try {
    return await lstat(p);
  } catch (e) {
    if (codeOf(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * Moves `staged` (inside `stagingDir`) over `target`. An existing directory at `target` is moved
 * into the staging dir first (rename cannot replace a non-empty directory) and goes away with it.
 */
async function replaceWith(
  staged: string,
  target: string,
  stagingDir: string,
  logger?: Logger,
): Promise<void> {
  const [old, fresh] = await Promise.all([lstatOrUndefined(target), lstat(staged)]);
  if (old?.isSymbolicLink()) {
    const to = await readlink(target).catch(() => '?');
    logger?.warn(`${target} was a symlink (to ${to}): replaced, not written through`);
  } else if (old?.isDirectory() && !fresh.isDirectory()) {
    throw new UserError(`${target} is a directory; lhc writes a file there: move it away`);
  } else if (old && !old.isDirectory() && fresh.isDirectory()) {
    throw new UserError(`${target} is a file; lhc writes a directory there: move it away`);
  } else if (old && !old.isFile() && !old.isDirectory()) {
    logger?.warn(`${target} was not a regular file: replaced`);
  }
  // rename() cannot put a directory over a symlink or a non-empty directory: move the old one
  // into the staging dir, which is removed afterwards.
  if (old && fresh.isDirectory()) {
    await rename(target, path.join(stagingDir, '.replaced'));
    if (old.isDirectory()) logger?.info(`replaced the earlier ${target}`);
  }
  await rename(staged, target);
}

/**
 * Runs `fill(tmp)` to create the output at `tmp` (a fresh path in a private staging dir beside
 * `target`), then renames it over `target`. The staging dir is removed whatever happens.
 */
export async function stageOutput<T>(
  target: string,
  fill: (tmp: string) => Promise<T>,
  logger?: Logger,
): Promise<T> {
  const stagingDir = await mkdtemp(path.join(path.dirname(target), STAGING_PREFIX));
  try {
    const staged = path.join(stagingDir, path.basename(target));
    const result = await fill(staged);
    await replaceWith(staged, target, stagingDir, logger);
    return result;
  } finally {
    // Holds only what lhc created here (and a replaced output); rm does not follow symlinks.
    await rm(stagingDir, { recursive: true, force: true });
  }
}

/** writeFile for artifacts: staged, exclusive, never through a symlink. */
export async function writeOutputFile(
  target: string,
  data: string | Uint8Array,
  o: { mode?: number; logger?: Logger } = {},
): Promise<void> {
  await stageOutput(target, (tmp) => writeExclusive(tmp, data, o.mode), o.logger);
}
