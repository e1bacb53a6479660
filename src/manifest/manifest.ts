/**
 * The manifest: what an image and its data template contain, one entry per path, sorted, with
 * nothing in it that depends on when or where the build ran (no times, no inode numbers, no
 * image digest). It is what `lhc diff` compares and what a committed manifest lock pins, so a
 * change of epoch or compressor never shows up as a content change.
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import { sha256File } from '../store/store.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface ManifestEntry {
  /** Absolute path as the container sees it ("/bin/lua", "/data/hits"). */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky, as four octal digits ("1777"). */
  mode: string;
  uid: number;
  gid: number;
  /** Files only. */
  size?: number;
  /** Files only. */
  sha256?: string;
  /** Symlinks only, verbatim (absolute targets stay absolute). */
  target?: string;
  /** Device nodes only, "major:minor". */
  device?: string;
}

export interface Manifest {
  lhcManifest: 1;
  name: string;
  /** The read-only squashfs root. */
  image: ManifestEntry[];
  /** The data template, at the path it is mounted on in the container. */
  data: { path: string; entries: ManifestEntry[] };
}

export const MANIFEST_VERSION = 1;

export function formatMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Byte order of UTF-8 paths, the same on every host and locale. */
export function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function sortEntries(entries: ManifestEntry[]): ManifestEntry[] {
  return [...entries].sort((x, y) => comparePaths(x.path, y.path));
}

/** Joins a container path and a relative path without doubling slashes. */
export function containerPath(base: string, rel: string): string {
  if (rel === '' || rel === '.') return base;
  return base === '/' ? `/${rel}` : `${base}/${rel}`;
}

function typeOf(st: import('node:fs').Stats): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

/** Every path under `dir` relative to it ("" for dir itself), in byte order, depth first. */
export async function walkSorted(dir: string): Promise<string[]> {
  const out: string[] = [''];
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(path.join(dir, rel))).sort(comparePaths);
    for (const name of names) {
      const child = rel ? `${rel}/${name}` : name;
      out.push(child);
      const st = await lstat(path.join(dir, child));
      if (st.isDirectory()) await visit(child);
    }
  };
  await visit('');
  return out;
}

export interface ScanOptions {
  /** Path the tree appears at in the container: "/" for the image, "/data" for the data template. */
  mountPath: string;
  /** Owner every entry gets (the image is packed with -all-root). */
  owner?: { uid: number; gid: number };
  /** Mode recorded for the tree's top directory (mksquashfs -root-mode). */
  rootMode?: number;
}

/** The manifest entries of a directory tree as it will be packed. */
export async function scanTree(dir: string, opts: ScanOptions): Promise<ManifestEntry[]> {
  let top;
  try {
    top = await lstat(dir);
  } catch (e) {
    throw new UserError(`cannot read ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  if (!top.isDirectory()) throw new UserError(`${dir} is not a directory`);
  const entries: ManifestEntry[] = [];
  for (const rel of await walkSorted(dir)) {
    const abs = path.join(dir, rel);
    const st = await lstat(abs);
    const type = typeOf(st);
    const mode = rel === '' && opts.rootMode !== undefined ? opts.rootMode : st.mode;
    const e: ManifestEntry = {
      path: containerPath(opts.mountPath, rel),
      type,
      mode: formatMode(mode),
      uid: opts.owner?.uid ?? st.uid,
      gid: opts.owner?.gid ?? st.gid,
    };
    if (type === 'file') {
      e.size = st.size;
      e.sha256 = await sha256File(abs);
    } else if (type === 'symlink') {
      e.target = await readlink(abs);
    } else if (type === 'char' || type === 'block') {
      // Linux encodes major/minor in rdev this way (glibc's gnu_dev_major/minor).
      const d = BigInt(st.rdev);
      const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
      const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
      e.device = `${major}:${minor}`;
    }
    entries.push(e);
  }
  return sortEntries(entries);
}

export const KEY_ORDER: (keyof ManifestEntry)[] = [
  'path',
  'type',
  'mode',
  'uid',
  'gid',
  'size',
  'sha256',
  'target',
  'device',
];

function entryJson(e: ManifestEntry): string {
  const o: Record<string, unknown> = {};
  for (const k of KEY_ORDER) if (e[k] !== undefined) o[k] = e[k];
  return JSON.stringify(o);
}

/**
 * One entry per line with a fixed key order: the bytes depend only on the content, and a
 * committed lock diffs line by line in git.
 */
export function serializeManifest(m: Manifest): string {
  const list = (entries: ManifestEntry[], indent: string) =>
    entries.length === 0
      ? '[]'
      : `[\n${sortEntries(entries)
          .map((e) => `${indent}  ${entryJson(e)}`)
          .join(',\n')}\n${indent}]`;
  return (
    '{\n' +
    `  "lhcManifest": ${MANIFEST_VERSION},\n` +
    `  "name": ${JSON.stringify(m.name)},\n` +
    `  "image": ${list(m.image, '  ')},\n` +
    `  "data": {\n    "path": ${JSON.stringify(m.data.path)},\n    "entries": ${list(m.data.entries, '    ')}\n  }\n` +
    '}\n'
  );
}

function isEntry(x: unknown): x is ManifestEntry {
  if (typeof x !== 'object' || x === null) return false;
  const e = x as Record<string, unknown>;
  return (
    typeof e.path === 'string' &&
    typeof e.type === 'string' &&
    typeof e.mode === 'string' &&
    /^[0-7]{4}$/.test(e.mode) &&
    typeof e.uid === 'number' &&
    typeof e.gid === 'number'
  );
}

/** Parses a manifest file's text; `what` names the file in errors. */
export function parseManifest(text: string, what: string): Manifest {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${what}: not valid JSON (${(e as Error).message})`);
  }
  const m = data as Partial<Manifest> | null;
  if (!m || typeof m !== 'object' || m.lhcManifest !== MANIFEST_VERSION) {
    throw new UserError(
      `${what}: not an lhc manifest (expected "lhcManifest": ${MANIFEST_VERSION})`,
    );
  }
  if (
    !Array.isArray(m.image) ||
    !m.data ||
    !Array.isArray(m.data.entries) ||
    typeof m.data.path !== 'string'
  ) {
    throw new UserError(`${what}: manifest lacks "image" or "data.entries"`);
  }
  const bad = [...m.image, ...m.data.entries].findIndex((e) => !isEntry(e));
  if (bad !== -1) throw new UserError(`${what}: entry ${bad} is not a valid manifest entry`);
  return {
    lhcManifest: 1,
    name: String(m.name ?? ''),
    image: m.image,
    data: { path: m.data.path, entries: m.data.entries },
  };
}
