/**
 * Safe extraction of rootfs tarballs (.tar, .tar.gz, .tar.xz; the format is read from the magic
 * bytes, never from the name).
 *
 * npm `tar` is used only to parse entries: its extractor rewrites absolute symlink targets
 * (`/bin/busybox` -> `bin/busybox`), and rootfs tarballs are full of them. Files are written
 * here instead, with these rules:
 * - the target directory is created fresh (mkdir, never reused) with mode 0700 until the end;
 * - entry paths must be relative and free of `..` (Alpine/Debian rootfs tarballs always are):
 *   anything else is refused with an error naming the entry;
 * - parents are resolved chroot-style inside the root (src/root/resolve.ts), files are opened
 *   O_CREAT|O_EXCL|O_NOFOLLOW, so nothing is ever written through a link;
 * - symlinks are created verbatim, after every file and directory, so no entry is ever written
 *   through a symlink from the same archive; a symlink that would replace a directory or file
 *   is refused;
 * - hardlinks may only point at regular files extracted earlier from this archive;
 * - device nodes and fifos are skipped and counted (nspawn provides /dev);
 * - setuid/setgid bits are stripped: the image is hardened and nothing in it may gain
 *   privileges by exec (the board also runs with no-new-privileges);
 * - owners are set to the archive's numeric uid/gid when running as root;
 * - decompressed bytes are capped (ratio to the compressed size, with a floor, and an absolute
 *   cap), so a decompression bomb is refused before it fills the disk.
 * On any error the partly extracted directory is removed.
 */
import { once } from 'node:events';
import {
  closeSync,
  constants as fsc,
  createReadStream,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  chmodSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  readlinkSync,
} from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { isRoot, run } from '../tools/exec.js';
import { formatBytes } from '../store/download.js';
import { resolveInRoot } from './resolve.js';

export type Compression = 'none' | 'gzip' | 'xz';

export interface ExtractOptions {
  logger?: Logger;
  /** Largest allowed decompressed/compressed size ratio. Default 200. */
  maxRatio?: number;
  /** The ratio cap never applies below this many decompressed bytes (small tarballs of empty
   * files compress extremely well). Default 16 MiB. */
  ratioFloorBytes?: number;
  /** Absolute cap on decompressed bytes. Default 8 GiB. */
  maxBytes?: number;
  /** Set owners to the archive's numeric ids. Default: when running as root. */
  chown?: boolean;
}

export interface ExtractSummary {
  compression: Compression;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  skipped: { devices: number; fifos: number; other: number };
  /** Entries whose setuid/setgid bits were removed. */
  setidStripped: number;
  /** Bytes of regular file content written. */
  bytes: number;
}

export class ExtractError extends UserError {
  constructor(
    readonly archive: string,
    readonly entry: string | undefined,
    readonly reason: string,
  ) {
    super(`refusing ${archive}: ${entry !== undefined ? `entry '${entry}': ` : ''}${reason}`);
  }
}

export const DEFAULT_MAX_RATIO = 200;
export const DEFAULT_RATIO_FLOOR = 16 * 1024 * 1024;
export const DEFAULT_MAX_BYTES = 8 * 1024 * 1024 * 1024;

const SETID = 0o6000;

/** Reads the first bytes and names the compression; refuses formats we do not unpack. */
export function detectCompression(head: Buffer): Compression | { unsupported: string } {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (
    head.length >= 6 &&
    head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))
  )
    return 'xz';
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return { unsupported: 'zstd' };
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh')
    return { unsupported: 'bzip2' };
  if (head.length >= 2 && head[0] === 0x5d && head[1] === 0x00) return { unsupported: 'lzma' };
  return 'none';
}

function readHead(file: string): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(512);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Validates an entry's path and returns its components, relative to the root.
 * Refused: absolute paths, `..` components, NUL bytes. `./x` and `x/` are normal.
 */
export function entryComponents(name: string): string[] {
  if (name.includes('\0')) throw new Error('path contains a NUL byte');
  if (name.startsWith('/')) throw new Error('absolute path (rootfs tarballs use relative paths)');
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new Error('path contains ".." (it could point outside the root)');
  return parts;
}

interface PendingSymlink {
  name: string;
  parts: string[];
  target: string;
  uid?: number;
  gid?: number;
}

interface DirMeta {
  host: string;
  mode: number;
  uid?: number;
  gid?: number;
}

class Extractor {
  readonly summary: ExtractSummary;
  /** Regular files written from this archive: normalized entry path -> host path (hardlink targets). */
  private readonly files = new Map<string, string>();
  private readonly dirs = new Map<string, DirMeta>();
  private readonly symlinks: PendingSymlink[] = [];
  private readonly chown: boolean;
  /** First error met while handling entries; the stream is drained and this is thrown. */
  failure: unknown;
  /** Entries seen (any type), to tell an empty or non-tar input from a real archive. */
  entries = 0;

  constructor(
    private readonly archive: string,
    private readonly root: string,
    compression: Compression,
    opts: ExtractOptions,
  ) {
    this.chown = opts.chown ?? isRoot();
    this.summary = {
      compression,
      files: 0,
      dirs: 0,
      symlinks: 0,
      hardlinks: 0,
      skipped: { devices: 0, fifos: 0, other: 0 },
      setidStripped: 0,
      bytes: 0,
    };
  }

  private fail(entry: string | undefined, reason: string): never {
    throw new ExtractError(this.archive, entry, reason);
  }

  private mode(raw: number | undefined, fallback: number): number {
    const m = raw ?? fallback;
    if (m & SETID) this.summary.setidStripped++;
    return m & 0o7777 & ~SETID;
  }

  /** Resolves the parent directory of an entry inside the root, creating missing parents. */
  private parentOf(name: string, parts: string[]): string {
    try {
      const r = resolveInRoot(this.root, `/${parts.slice(0, -1).join('/')}`, {
        createMissing: true,
      });
      if (r.exists && !lstatSync(r.host).isDirectory())
        this.fail(name, `parent ${r.inRoot} is not a directory`);
      if (!r.exists) mkdirSync(r.host, { mode: 0o755 });
      return r.host;
    } catch (e) {
      if (e instanceof ExtractError) throw e;
      this.fail(
        name,
        `cannot resolve its parent directory inside the root: ${(e as Error).message}`,
      );
    }
  }

  onEntry(entry: ReadEntry): void {
    if (this.failure !== undefined) {
      entry.resume();
      return;
    }
    this.entries++;
    try {
      this.handle(entry);
    } catch (e) {
      this.failure = e;
      entry.resume();
    }
  }

  private handle(entry: ReadEntry): void {
    const name = entry.path;
    let parts: string[];
    try {
      parts = entryComponents(name);
    } catch (e) {
      this.fail(name, (e as Error).message);
    }
    switch (entry.type) {
      case 'File':
      case 'OldFile':
      case 'ContiguousFile':
        if (parts.length === 0) this.fail(name, 'a file cannot replace the root directory');
        this.writeFile(entry, name, parts);
        return;
      case 'Directory':
      case 'GNUDumpDir':
        this.makeDir(entry, name, parts);
        entry.resume();
        return;
      case 'SymbolicLink': {
        if (parts.length === 0) this.fail(name, 'a symlink cannot replace the root directory');
        const target = entry.linkpath ?? '';
        if (target === '' || target.includes('\0'))
          this.fail(name, 'symlink with an empty or invalid target');
        this.symlinks.push({ name, parts, target, uid: entry.uid, gid: entry.gid });
        entry.resume();
        return;
      }
      case 'Link':
        if (parts.length === 0) this.fail(name, 'a hardlink cannot replace the root directory');
        this.makeHardlink(name, parts, entry.linkpath ?? '');
        entry.resume();
        return;
      case 'CharacterDevice':
      case 'BlockDevice':
        this.summary.skipped.devices++;
        entry.resume();
        return;
      case 'FIFO':
        this.summary.skipped.fifos++;
        entry.resume();
        return;
      default:
        this.summary.skipped.other++;
        entry.resume();
    }
  }

  private writeFile(entry: ReadEntry, name: string, parts: string[]): void {
    const parent = this.parentOf(name, parts);
    const host = path.join(parent, parts[parts.length - 1]!);
    const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
    let fd: number;
    try {
      fd = openSync(host, flags, 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // A later entry for the same path replaces the earlier file (appended archives), as tar does;
      // anything else in the way is a conflict.
      const st = lstatSync(host);
      if (!st.isFile())
        this.fail(
          name,
          `a ${st.isDirectory() ? 'directory' : 'non-file'} already exists at this path`,
        );
      unlinkSync(host);
      fd = openSync(host, flags, 0o600);
    }
    const mode = this.mode(entry.mode, 0o644);
    const key = parts.join('/');
    entry.on('data', (chunk: Buffer) => {
      if (fd < 0) return;
      try {
        let off = 0;
        while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
        this.summary.bytes += chunk.length;
      } catch (e) {
        this.failure ??= new ExtractError(
          this.archive,
          name,
          `write failed: ${(e as Error).message}`,
        );
        closeSync(fd);
        fd = -1;
      }
    });
    entry.on('end', () => {
      if (fd < 0) return;
      try {
        if (this.chown && entry.uid !== undefined && entry.gid !== undefined)
          fchownSync(fd, entry.uid, entry.gid);
        fchmodSync(fd, mode);
        if (entry.mtime) futimesSync(fd, entry.mtime, entry.mtime);
      } catch (e) {
        this.failure ??= new ExtractError(
          this.archive,
          name,
          `cannot set owner/mode: ${(e as Error).message}`,
        );
      } finally {
        closeSync(fd);
        fd = -1;
      }
      this.files.set(key, host);
      this.summary.files++;
    });
  }

  private makeDir(entry: ReadEntry, name: string, parts: string[]): void {
    const mode = this.mode(entry.mode, 0o755);
    if (parts.length === 0) {
      this.dirs.set('', { host: this.root, mode, uid: entry.uid, gid: entry.gid });
      return;
    }
    const parent = this.parentOf(name, parts);
    const host = path.join(parent, parts[parts.length - 1]!);
    try {
      // Owner-writable until the end, so entries inside a 0555 directory can still be written.
      mkdirSync(host, { mode: 0o700 });
      this.summary.dirs++;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if (!lstatSync(host).isDirectory())
        this.fail(name, 'a non-directory already exists at this path');
    }
    this.dirs.set(parts.join('/'), { host, mode, uid: entry.uid, gid: entry.gid });
  }

  private makeHardlink(name: string, parts: string[], linkpath: string): void {
    let targetParts: string[];
    try {
      targetParts = entryComponents(linkpath);
    } catch (e) {
      this.fail(name, `hardlink target '${linkpath}': ${(e as Error).message}`);
    }
    const targetHost = this.files.get(targetParts.join('/'));
    if (targetHost === undefined) {
      this.fail(
        name,
        `hardlink target '${linkpath}' is not a regular file extracted earlier from this archive`,
      );
    }
    // We created targetHost ourselves with O_NOFOLLOW; make sure it still is that regular file.
    if (!lstatSync(targetHost).isFile())
      this.fail(name, `hardlink target '${linkpath}' is no longer a regular file`);
    const parent = this.parentOf(name, parts);
    const host = path.join(parent, parts[parts.length - 1]!);
    try {
      linkSync(targetHost, host);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const st = lstatSync(host);
      if (!st.isFile()) this.fail(name, 'a non-file already exists at this path');
      unlinkSync(host);
      linkSync(targetHost, host);
    }
    this.files.set(parts.join('/'), host);
    this.summary.hardlinks++;
  }

  /** After the stream: the symlinks, verbatim, then directory owners and modes (deepest first). */
  finish(): void {
    for (const s of this.symlinks) {
      const parent = this.parentOf(s.name, s.parts);
      const host = path.join(parent, s.parts[s.parts.length - 1]!);
      try {
        symlinkSync(s.target, host);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const st = lstatSync(host);
        if (st.isSymbolicLink() && readlinkSync(host) === s.target) continue;
        const what = st.isDirectory()
          ? 'a directory'
          : st.isSymbolicLink()
            ? 'another symlink'
            : 'a file';
        this.fail(
          s.name,
          `symlink -> ${s.target} conflicts with ${what} at the same path from this archive`,
        );
      }
      if (this.chown && s.uid !== undefined && s.gid !== undefined) lchownSync(host, s.uid, s.gid);
      this.summary.symlinks++;
    }
    // Deepest first, so a read-only parent does not stop us from fixing its children.
    const dirs = [...this.dirs.entries()].sort(
      ([a], [b]) => b.split('/').length - a.split('/').length,
    );
    for (const [, d] of dirs) {
      if (this.chown && d.uid !== undefined && d.gid !== undefined)
        lchownSync(d.host, d.uid, d.gid);
      // chmod follows symlinks: d.host is a directory we made, and symlinks never replace directories.
      if (!lstatSync(d.host).isDirectory()) continue;
      chmodSync(d.host, d.mode);
    }
    if (!this.dirs.has('')) chmodSync(this.root, 0o755);
  }
}

function capFor(compression: Compression, compressedSize: number, opts: ExtractOptions): number {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  if (compression === 'none') return maxBytes;
  const byRatio = Math.max(
    opts.ratioFloorBytes ?? DEFAULT_RATIO_FLOOR,
    compressedSize * (opts.maxRatio ?? DEFAULT_MAX_RATIO),
  );
  return Math.min(maxBytes, byRatio);
}

function bombError(
  archive: string,
  cap: number,
  compressedSize: number,
  opts: ExtractOptions,
): ExtractError {
  return new ExtractError(
    archive,
    undefined,
    `decompresses to more than ${cap} bytes from ${compressedSize} compressed bytes: refused as a ` +
      `decompression bomb (lhc unpacks at most ${opts.maxRatio ?? DEFAULT_MAX_RATIO} times the compressed size, at least ` +
      `${formatBytes(opts.ratioFloorBytes ?? DEFAULT_RATIO_FLOOR)} and at most ${formatBytes(opts.maxBytes ?? DEFAULT_MAX_BYTES)})`,
  );
}

/**
 * xz has no decoder in Node: decompress with the xz CLI into a temp file, stopping one byte past
 * the cap so a bomb never fills the disk.
 */
async function xzToTemp(
  archive: string,
  tmpDir: string,
  cap: number,
  compressedSize: number,
  opts: ExtractOptions,
  logger?: Logger,
): Promise<string> {
  const out = path.join(tmpDir, 'archive.tar');
  const script = 'set -o pipefail; xz -dc -- "$1" | head -c "$2" > "$3"';
  const r = await run(['bash', '-c', script, 'bash', archive, String(cap + 1), out], {
    reject: false,
    logger,
  });
  const size = (await stat(out)).size;
  if (size > cap) throw bombError(archive, cap, compressedSize, opts);
  if (r.exitCode !== 0) {
    if (/xz: not found|command not found/.test(r.stderr)) {
      throw new UserError(
        `required tool 'xz' was not found; install it with: apt-get install xz-utils (or run: lhc setup)`,
      );
    }
    throw new ExtractError(
      archive,
      undefined,
      `xz could not decompress it: ${r.stderr.trim() || `exit code ${r.exitCode}`}`,
    );
  }
  return out;
}

/** Feeds a stream into the parser with backpressure, counting bytes against the cap. */
async function pump(
  source: Readable,
  parser: Parser,
  cap: number,
  onOver: () => Error,
  ex: Extractor,
): Promise<void> {
  let total = 0;
  const ended = new Promise<void>((resolve, reject) => {
    parser.on('end', resolve);
    parser.on('error', reject);
    parser.on('abort', reject);
  });
  // A rejection before we await `ended` must not become an unhandled one.
  ended.catch(() => {});
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > cap) throw onOver();
      if (ex.failure !== undefined) throw ex.failure;
      if (!parser.write(chunk)) await Promise.race([once(parser, 'drain'), ended]);
    }
    parser.end();
    await ended;
  } finally {
    source.destroy();
  }
}

/**
 * Extracts `archive` into `dest`, which must not exist yet (its parent must). Returns what was
 * extracted; throws ExtractError (a UserError naming the entry and the reason) for a refused
 * archive, after removing `dest`.
 */
export async function extractTarball(
  archive: string,
  dest: string,
  opts: ExtractOptions = {},
): Promise<ExtractSummary> {
  let compressedSize: number;
  try {
    compressedSize = (await stat(archive)).size;
  } catch (e) {
    throw new UserError(
      `cannot read tarball ${archive}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    );
  }
  const detected = detectCompression(readHead(archive));
  if (typeof detected === 'object') {
    throw new ExtractError(
      archive,
      undefined,
      `${detected.unsupported} compression is not supported (use .tar, .tar.gz or .tar.xz)`,
    );
  }
  const compression = detected;
  const cap = capFor(compression, compressedSize, opts);
  try {
    await mkdir(dest, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(
      code === 'EEXIST'
        ? `extraction target ${dest} already exists: extraction needs a fresh directory`
        : `cannot create extraction target ${dest}: ${code ?? String(e)}`,
    );
  }
  const tmpDir =
    compression === 'xz' ? await mkdtemp(path.join(path.dirname(dest), '.lhc-xz-')) : undefined;
  const ex = new Extractor(archive, dest, compression, opts);
  try {
    let source: Readable;
    if (compression === 'xz') {
      source = createReadStream(
        await xzToTemp(archive, tmpDir!, cap, compressedSize, opts, opts.logger),
      );
    } else if (compression === 'gzip') {
      source = createReadStream(archive).pipe(createGunzip());
    } else {
      source = createReadStream(archive);
    }
    const warnings: string[] = [];
    const parser = new Parser({
      strict: true,
      // Our stream is already decompressed: a nested compressed stream is not a rootfs tarball.
      zstd: false,
      brotli: false,
      maxDecompressionRatio: opts.maxRatio ?? DEFAULT_MAX_RATIO,
      onwarn: (code: string, message: string | Error) =>
        warnings.push(`${code}: ${String(message)}`),
    });
    parser.on('entry', (entry: ReadEntry) => ex.onEntry(entry));
    try {
      await pump(source, parser, cap, () => bombError(archive, cap, compressedSize, opts), ex);
    } catch (e) {
      if (e instanceof UserError) throw e;
      const msg = (e as Error).message ?? String(e);
      if (
        /unexpected end of file|incorrect header check|invalid/i.test(msg) &&
        compression === 'gzip'
      ) {
        throw new ExtractError(archive, undefined, `gzip stream is corrupt: ${msg}`);
      }
      throw new ExtractError(archive, undefined, `not a valid tar archive: ${msg}`);
    }
    if (ex.failure !== undefined) throw ex.failure;
    if (ex.entries === 0) {
      throw new ExtractError(
        archive,
        undefined,
        `not a tar archive (no entries found${warnings[0] ? `; ${warnings[0]}` : ''})`,
      );
    }
    ex.finish();
    const s = ex.summary;
    opts.logger?.debug(
      `extracted ${archive}: ${s.files} files, ${s.dirs} dirs, ${s.symlinks} symlinks, ${s.hardlinks} hardlinks, ` +
        `${s.bytes} bytes; skipped ${s.skipped.devices} devices, ${s.skipped.fifos} fifos, ${s.skipped.other} other`,
    );
    return s;
  } catch (e) {
    await rm(dest, { recursive: true, force: true });
    throw e;
  } finally {
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
  }
}
