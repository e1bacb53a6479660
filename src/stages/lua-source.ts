/**
 * Unpacks a Lua source tarball. The tarball's sha256 was verified by the store, so it is the
 * upstream release; it is still read defensively (trusted, but verified): every entry is listed
 * first and the archive is refused unless it holds only plain files and directories under one
 * top-level `lua-<version>/` directory, with no absolute or `..` paths.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { list, extract, type ReadEntry } from 'tar';
import { UserError } from '../core/errors.js';

/** Problems with one entry name, or undefined when it is acceptable. */
export function entryProblem(name: string, type: string, top: string): string | undefined {
  if (name.startsWith('/')) return 'absolute path';
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return 'path contains ".."';
  if (type !== 'File' && type !== 'OldFile' && type !== 'Directory')
    return `entry type ${type} (only files and directories are expected)`;
  if (parts[0] !== top) return `outside the top-level directory ${top}/`;
  return undefined;
}

/** Extracts `tarball` into `destDir` (which must exist, empty); returns the source tree's top directory. */
export async function extractLuaSource(
  tarball: string,
  destDir: string,
  version: string,
): Promise<string> {
  const top = `lua-${version}`;
  const problems: string[] = [];
  try {
    await list({
      file: tarball,
      strict: true,
      onReadEntry: (e: ReadEntry) => {
        const p = entryProblem(e.path, e.type, top);
        if (p && problems.length < 10) problems.push(`${e.path}: ${p}`);
      },
    });
  } catch (e) {
    throw new UserError(`${tarball} is not a readable tar archive: ${(e as Error).message}`);
  }
  if (problems.length > 0) {
    throw new UserError(
      `refusing to unpack ${tarball} as Lua ${version} source:\n  ${problems.join('\n  ')}`,
    );
  }
  await extract({
    file: tarball,
    cwd: destDir,
    strict: true,
    preservePaths: false,
    // Ownership from the archive means nothing here; the build runs as whoever runs lhc.
    preserveOwner: false,
    noChmod: false,
    filter: (p, e) => entryProblem(p, (e as ReadEntry).type, top) === undefined,
  });
  const dir = path.join(destDir, top);
  if (!existsSync(path.join(dir, 'src', 'lua.c')) || !existsSync(path.join(dir, 'Makefile'))) {
    throw new UserError(
      `${tarball} does not look like the Lua ${version} source (no ${top}/Makefile and ${top}/src/lua.c)`,
    );
  }
  return dir;
}
