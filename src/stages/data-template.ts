/**
 * The data template: a tar.gz of the writable data directory that seeds the board's noexec data
 * partition. Reproducible by construction: entries in byte order (npm tar does not sort, so it
 * gets a sorted list with noDirRecurse), one mtime (the epoch), fixed numeric owner and no user
 * names, no atime/ctime/dev/inode/link-count in any header, modes exactly as on disk (no
 * `portable`, which would turn 1777 into 1755), hard links stored as plain files, and gzip with a
 * fixed header (GNU gzip -n: mtime 0, no file name, OS byte 3).
 *
 * Owners follow from the config alone: the top directory belongs to the service (service.user's
 * ids, so a non-root service can create its state there), every entry it carries to root, so
 * files shipped in the template stay read-only to the service unless their mode says otherwise.
 */
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, lstat, mkdtemp, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Parser, create as tarCreate, type ReadEntry, type WriteEntry } from 'tar';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { writeOutputFile } from '../core/safe-write.js';
import {
  containerPath,
  formatMode,
  sortEntries,
  walkSorted,
  type EntryType,
  type ManifestEntry,
} from '../manifest/manifest.js';
import { run } from '../tools/exec.js';

export interface Owner {
  uid: number;
  gid: number;
}

export interface DataTemplateOptions {
  /** The directory to archive; undefined gives a template holding only an empty 0755 root. */
  dataDir?: string;
  /** Where the partition is mounted in the container (entries' manifest paths). */
  dataPath: string;
  epoch: number;
  /** Output file (…-data.tar.gz). */
  out: string;
  /** Owner written for every entry below the top; default root (0:0). The builder's own uid would differ per machine. */
  owner?: Owner;
  /** Owner of the top directory itself (the data path); default `owner`. */
  topOwner?: Owner;
  logger?: Logger;
}

export interface DataTemplate {
  path: string;
  sha256: string;
  bytes: number;
  /** Read back from the archive itself, so the manifest describes what was written. */
  entries: ManifestEntry[];
}

/** A stat that carries only what belongs in the archive. */
function archiveStat(st: Stats, owner: Owner): Stats {
  const s = Object.assign(Object.create(Object.getPrototypeOf(st) as object) as Stats, st);
  return Object.assign(s, {
    uid: owner.uid,
    gid: owner.gid,
    dev: 0,
    ino: 0,
    nlink: 1,
    atime: undefined,
    ctime: undefined,
  }) as unknown as Stats;
}

/** npm tar turns a second name of a multiply-linked inode into a hard link; a cache that never hits stores each as a file. */
class NeverHitMap<K, V> extends Map<K, V> {
  override get(): V | undefined {
    return undefined;
  }
}

const SUPPORTED = (st: Stats) => st.isFile() || st.isDirectory() || st.isSymbolicLink();

/**
 * Why a symlink at `rel` pointing at `target` cannot go into the template, or undefined.
 * Refused at build time rather than unpacked: verify and the board unpack the template on the
 * host, where an absolute target (or one climbing out with `..`) names a host path for every
 * host tool that follows it, and npm tar's strict unpacking refuses such a link anyway. A link
 * relative and inside the template means the same thing on the host and in the container.
 */
export function templateLinkProblem(rel: string, target: string): string | undefined {
  if (target.startsWith('/'))
    return `'${rel}' is a symlink to the absolute path ${target}; use a relative target inside the template`;
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(rel), target));
  if (resolved === '..' || resolved.startsWith('../'))
    return `'${rel}' is a symlink to ${target}, which points outside the template`;
  return undefined;
}

/** The tar (uncompressed) of `dir`, reproducible as described above. */
export async function tarDirectory(
  dir: string,
  epoch: number,
  owner: Owner = { uid: 0, gid: 0 },
  topOwner: Owner = owner,
): Promise<Buffer> {
  const rels = await walkSorted(dir);
  const statCache = new Map<string, Stats>();
  const unsupported: string[] = [];
  const badLinks: string[] = [];
  for (const rel of rels) {
    const abs = path.resolve(dir, rel || '.');
    const st = await lstat(abs);
    if (!SUPPORTED(st)) unsupported.push(rel);
    if (st.isSymbolicLink()) {
      const problem = templateLinkProblem(rel, await readlink(abs));
      if (problem) badLinks.push(problem);
    }
    // Keyed like npm tar's own cache (path.resolve(cwd, entry)), so it never stats the file again.
    statCache.set(abs, archiveStat(st, rel === '' ? topOwner : owner));
  }
  if (unsupported.length > 0) {
    throw new UserError(
      `data template ${dir}: only files, directories and symlinks can go into the template; found ` +
        unsupported.map((r) => `'${r}'`).join(', '),
    );
  }
  if (badLinks.length > 0) throw new UserError(`data template ${dir}: ${badLinks.join('; ')}`);
  const warnings: string[] = [];
  const stream = tarCreate(
    {
      cwd: dir,
      noDirRecurse: true,
      mtime: new Date(epoch * 1000),
      portable: false,
      strict: true,
      statCache,
      linkCache: new NeverHitMap(),
      onwarn: (code: string, message: string) => void warnings.push(`${code}: ${message}`),
      onWriteEntry: (entry: WriteEntry) => {
        // Otherwise the builder's $USER lands in the header of files it owns.
        entry.myuser = '';
      },
    },
    rels.map((r) => r || '.'),
  );
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  if (warnings.length > 0) throw new UserError(`data template ${dir}: ${warnings.join('; ')}`);
  return Buffer.concat(chunks);
}

/** GNU gzip -n: the header is fixed (no name, mtime 0, OS 3) and its deflate output has not changed in decades. */
export async function gzipFixed(data: Buffer, logger?: Logger): Promise<Buffer> {
  const r = await run(['gzip', '-n', '-9', '-c'], { input: data, binary: true, logger });
  return r.stdoutBytes;
}

const TAR_TYPES: Partial<Record<string, EntryType>> = {
  File: 'file',
  OldFile: 'file',
  ContiguousFile: 'file',
  Directory: 'dir',
  SymbolicLink: 'symlink',
  CharacterDevice: 'char',
  BlockDevice: 'block',
  FIFO: 'fifo',
};

export interface TarListEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  uname: string;
  gname: string;
  linkpath?: string;
  sha256?: string;
}

/** Every entry of an uncompressed or gzipped tar, in archive order, with file digests. */
export async function listTar(archive: Buffer): Promise<TarListEntry[]> {
  const out: TarListEntry[] = [];
  const parser = new Parser({
    strict: true,
    onReadEntry: (e: ReadEntry) => {
      const h = createHash('sha256');
      const item: TarListEntry = {
        path: e.path,
        type: e.type,
        mode: e.mode ?? 0,
        uid: e.uid ?? -1,
        gid: e.gid ?? -1,
        size: e.size,
        mtime: e.mtime ? e.mtime.getTime() / 1000 : -1,
        uname: e.uname ?? '',
        gname: e.gname ?? '',
        linkpath: e.linkpath,
      };
      out.push(item);
      e.on('data', (c: Buffer) => h.update(c));
      e.on('end', () => {
        if (e.type === 'File' || e.type === 'OldFile') item.sha256 = h.digest('hex');
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    parser.on('error', reject);
    parser.on('end', () => resolve());
    parser.end(archive);
  });
  return out;
}

/** Manifest entries of a data template, at the container path the partition is mounted on. */
export function tarManifestEntries(list: TarListEntry[], dataPath: string): ManifestEntry[] {
  return sortEntries(
    list.map((t) => {
      const rel = t.path.replace(/^\.\/?/, '').replace(/\/$/, '');
      const type = TAR_TYPES[t.type];
      if (!type)
        throw new UserError(`data template: unexpected tar entry type ${t.type} for ${t.path}`);
      const e: ManifestEntry = {
        path: containerPath(dataPath, rel),
        type,
        mode: formatMode(t.mode),
        uid: t.uid,
        gid: t.gid,
      };
      if (type === 'file') {
        e.size = t.size;
        e.sha256 = t.sha256;
      } else if (type === 'symlink') e.target = t.linkpath;
      return e;
    }),
  );
}

export async function writeDataTemplate(o: DataTemplateOptions): Promise<DataTemplate> {
  let dir = o.dataDir;
  let tmp: string | undefined;
  try {
    if (dir === undefined) {
      tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-empty-data-'));
      await chmod(tmp, 0o755);
      dir = tmp;
    }
    const tarBytes = await tarDirectory(dir, o.epoch, o.owner, o.topOwner ?? o.owner);
    const gz = await gzipFixed(tarBytes, o.logger);
    await writeOutputFile(o.out, gz, { logger: o.logger });
    return {
      path: o.out,
      sha256: createHash('sha256').update(gz).digest('hex'),
      bytes: gz.length,
      entries: tarManifestEntries(await listTar(tarBytes), o.dataPath),
    };
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
}
