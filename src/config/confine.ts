/**
 * Paths a config names stay in the project. lhc runs as root and a pull request can edit lhc.yml:
 * `files[].src: /etc/shadow` would ship the host's secrets in the image, `fixture: /dev/zero`
 * would be read until memory runs out. So every path the config reads from the host must, after
 * following symlinks, lie inside the project (the git work tree holding the config, else the
 * config's directory), be of the kind the field expects (a regular file or a directory, never a
 * device, FIFO or socket) and, for files read into memory or copied into the image, stay under a
 * size cap.
 */
import { existsSync } from 'node:fs';
import { lstat, realpath } from 'node:fs/promises';
import path from 'node:path';

/** Largest fixture verify reads into memory to compare a response with. */
export const MAX_FIXTURE_BYTES = 16 * 1024 * 1024;
/** Largest single file `files[].src` may name (a directory's files are copied as they are). */
export const MAX_FILE_BYTES = 256 * 1024 * 1024;

export type PathKind = 'file' | 'dir' | 'file-or-dir';

export interface NamedPath {
  /** The field as messages show it, e.g. `probes[2].fixture`. */
  field: string;
  /** The field's path in the document, to find its line. */
  at: (string | number)[];
  /** The value as written in the config (relative to the config's directory). */
  value: string;
  kind: PathKind;
  /** Byte cap for a regular file. */
  maxBytes?: number;
}

/** Kernel views and device trees: never a source of config input, whatever the project root. */
const SYSTEM_TREES = ['/proc', '/sys', '/dev', '/run'];

const within = (root: string, p: string): boolean => {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

/**
 * The directory a config's paths must stay in: the git work tree that holds it (examples name
 * fixtures in a sibling directory, `../../fixtures/...`), else the config's own directory.
 */
export async function projectRoot(configDir: string): Promise<string> {
  const real = await realpath(configDir);
  for (let d = real; ; d = path.dirname(d)) {
    if (existsSync(path.join(d, '.git'))) return d === '/' ? real : d;
    if (d === path.dirname(d)) return real;
  }
}

function kindOf(st: {
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isSymbolicLink(): boolean;
}): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device node';
  return 'not a regular file or directory';
}

function codeOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

/** Realpath of `p`; for a path that does not exist yet, that of its deepest existing ancestor plus the rest. */
async function resolveReal(p: string): Promise<{ real: string; exists: boolean }> {
  const rest: string[] = [];
  for (let cur = p; ; cur = path.dirname(cur)) {
    try {
      return { real: path.join(await realpath(cur), ...rest.reverse()), exists: rest.length === 0 };
    } catch (e) {
      if (codeOf(e) !== 'ENOENT' || cur === path.dirname(cur)) throw e;
      rest.push(path.basename(cur));
    }
  }
}

function errnoReason(e: unknown): string {
  const code = codeOf(e);
  if (code === 'ENAMETOOLONG')
    return 'a path component is longer than the file system allows (255 bytes)';
  if (code === 'ELOOP') return 'too many levels of symbolic links';
  if (code === 'ENOTDIR') return 'a component of the path is not a directory';
  if (code === 'EACCES') return 'permission denied';
  return code;
}

/**
 * What is wrong with `abs` (an absolute host path) for a field of `kind`, or undefined when it is
 * fine. A path that does not exist is fine here when `mustExist` is false: the build reports it
 * before it starts (check-files.ts), but `lhc trace` runs without fixtures.
 */
export async function pathProblem(
  root: string,
  abs: string,
  kind: PathKind,
  opts: { maxBytes?: number; mustExist?: boolean } = {},
): Promise<string | undefined> {
  if (abs.includes('\0')) return 'a path cannot contain a NUL byte';
  if (abs.split('/').some((c) => Buffer.byteLength(c) > 255))
    return 'a path component is longer than the file system allows (255 bytes)';
  let resolved: { real: string; exists: boolean };
  try {
    resolved = await resolveReal(abs);
  } catch (e) {
    return `cannot read ${abs} (${errnoReason(e)})`;
  }
  const { real } = resolved;
  const shown = real === abs ? abs : `${abs} (which resolves to ${real})`;
  if (!within(root, real)) return `${shown} is outside the project ${root}`;
  if (SYSTEM_TREES.some((t) => within(t, real)))
    return `${shown} is in ${real.split('/')[1] ? `/${real.split('/')[1]}` : '/'}, which a config may not read`;
  if (!resolved.exists) return opts.mustExist ? `cannot read ${abs} (ENOENT)` : undefined;
  let st;
  try {
    st = await lstat(real);
  } catch (e) {
    return `cannot read ${abs} (${errnoReason(e)})`;
  }
  if (st.isDirectory())
    return kind === 'file' ? `${shown} is a directory, expected a file` : undefined;
  if (!st.isFile())
    return `${shown} is ${kindOf(st)}; only regular files${kind === 'file' ? '' : ' and directories'} can be named`;
  if (kind === 'dir') return `${shown} is a file, expected a directory`;
  if (opts.maxBytes !== undefined && st.size > opts.maxBytes)
    return `${shown} is ${st.size} bytes, more than the cap of ${opts.maxBytes} bytes`;
  return undefined;
}

/** The host paths a raw config names, with the kind each field expects. */
export function namedPaths(raw: {
  files: { src: string }[];
  data: { template?: string };
  base: { type: string; path?: string };
  probes: { fixture?: string }[];
}): NamedPath[] {
  const out: NamedPath[] = [];
  raw.files.forEach((f, i) =>
    out.push({
      field: `files[${i}].src`,
      at: ['files', i, 'src'],
      value: f.src,
      kind: 'file-or-dir',
      maxBytes: MAX_FILE_BYTES,
    }),
  );
  if (raw.data.template)
    out.push({
      field: 'data.template',
      at: ['data', 'template'],
      value: raw.data.template,
      kind: 'dir',
    });
  if (raw.base.type === 'tarball' && raw.base.path)
    out.push({ field: 'base.path', at: ['base', 'path'], value: raw.base.path, kind: 'file' });
  raw.probes.forEach((p, i) => {
    if (p.fixture)
      out.push({
        field: `probes[${i}].fixture`,
        at: ['probes', i, 'fixture'],
        value: p.fixture,
        kind: 'file',
        maxBytes: MAX_FIXTURE_BYTES,
      });
  });
  return out;
}
