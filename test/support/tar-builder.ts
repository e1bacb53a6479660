/**
 * Writes ustar archives byte by byte, so tests can build archives no well-behaved tar tool
 * would produce (`../` names, absolute hardlinks, symlink loops, device nodes).
 */
import { gzipSync } from 'node:zlib';

export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo';

export interface TarEntry {
  name: string;
  type?: TarType;
  /** File content (files only). */
  data?: Buffer | string;
  /** Symlink target or hardlink source, written exactly as given. */
  link?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  /** PAX extended header records for this entry (written as a typeflag `x` entry before it). */
  pax?: Record<string, string>;
}

const TYPEFLAG: Record<TarType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  chardev: '3',
  blockdev: '4',
  dir: '5',
  fifo: '6',
};

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function put(buf: Buffer, offset: number, width: number, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > width)
    throw new Error(`tar-builder: '${text}' does not fit in ${width} bytes`);
  bytes.copy(buf, offset);
}

/** One PAX record, `LEN key=value\n`, where LEN counts the whole record, its own digits included. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body);
  while (String(len).length + Buffer.byteLength(body) !== len)
    len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function paxEntry(e: TarEntry): Buffer[] {
  const data = Buffer.from(
    Object.entries(e.pax ?? {})
      .map(([k, v]) => paxRecord(k, v))
      .join(''),
  );
  const name = `PaxHeaders/${e.name.split('/').filter(Boolean).pop() ?? ''}`.slice(0, 99);
  const h = tarHeader({ name, mode: 0o644, mtime: e.mtime }, data.length, 'x');
  return [h, data, Buffer.alloc((512 - (data.length % 512)) % 512)];
}

/** A ustar header; `typeflag` overrides the entry's type (`x`: a PAX extended header). */
export function tarHeader(e: TarEntry, size: number, typeflag?: string): Buffer {
  const type = e.type ?? 'file';
  const h = Buffer.alloc(512);
  put(h, 0, 100, e.name);
  put(h, 100, 8, octal(e.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644), 8));
  put(h, 108, 8, octal(e.uid ?? 0, 8));
  put(h, 116, 8, octal(e.gid ?? 0, 8));
  put(h, 124, 12, octal(size, 12));
  put(h, 136, 12, octal(e.mtime ?? 1_700_000_000, 12));
  h.fill(' ', 148, 156);
  put(h, 156, 1, typeflag ?? TYPEFLAG[type]);
  put(h, 157, 100, e.link ?? '');
  put(h, 257, 6, 'ustar\0');
  put(h, 263, 2, '00');
  put(h, 265, 32, 'root');
  put(h, 297, 32, 'root');
  put(h, 329, 8, octal(e.devmajor ?? 0, 8));
  put(h, 337, 8, octal(e.devminor ?? 0, 8));
  let sum = 0;
  for (const b of h) sum += b;
  put(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return h;
}

/**
 * An uncompressed archive, by default complete (with the two zero blocks at the end). An apk's
 * control part leaves them out, so that apk reads on into the data part that follows it.
 */
export function buildTar(
  entries: readonly TarEntry[],
  opts: { endOfArchive?: boolean } = {},
): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.pax) parts.push(...paxEntry(e));
    const data =
      e.type === undefined || e.type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    parts.push(tarHeader(e, data.length), data);
    const pad = (512 - (data.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  if (opts.endOfArchive ?? true) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function buildTarGz(entries: readonly TarEntry[]): Buffer {
  return gzipSync(buildTar(entries));
}
