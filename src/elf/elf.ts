/**
 * A small ELF reader: just enough of the headers to tell what a binary needs at run time
 * (interpreter, shared libraries, search paths), for verifying the static Lua and for pruning.
 * Pure TypeScript so it works the same on every host and never depends on `file` or `readelf`.
 *
 * Every offset and count read from the file is bounds-checked against the file's size, so
 * garbage or truncated input ends in an ElfError naming what is wrong, never a hang or a
 * huge allocation.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { UserError } from '../core/errors.js';

export type ElfType = 'EXEC' | 'DYN' | 'REL' | 'CORE' | 'OTHER';

export interface ElfInfo {
  bits: 32 | 64;
  littleEndian: boolean;
  machine: number;
  /** 'aarch64' (183), 'x86_64' (62), a few others by name, else 'unknown(N)'. */
  machineName: string;
  type: ElfType;
  /** PT_INTERP: the dynamic loader the kernel starts first. */
  interp?: string;
  /** DT_NEEDED entries, in file order. */
  needed: string[];
  /** DT_RUNPATH, else DT_RPATH, split on ':'. */
  runpath: string[];
  soname?: string;
  /** No interpreter and no needed libraries: runs with nothing else in the root. */
  isStatic: boolean;
}

export class ElfError extends UserError {
  constructor(message: string) {
    super(message);
  }
}

export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

const MACHINE_NAMES: Record<number, string> = {
  3: 'i386',
  8: 'mips',
  20: 'ppc',
  21: 'ppc64',
  40: 'arm',
  [EM_X86_64]: 'x86_64',
  [EM_AARCH64]: 'aarch64',
  243: 'riscv',
};

export function machineName(machine: number): string {
  return MACHINE_NAMES[machine] ?? `unknown(${machine})`;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PN_XNUM = 0xffff;

const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

/** Longest string we accept from a string table; real ones are far shorter. */
const MAX_STRING = 64 * 1024;

/** Random access to the file's bytes; returns fewer bytes than asked at the end of the file. */
interface Source {
  size: number;
  read(offset: number, length: number): Buffer;
}

function isElfMagic(b: Buffer): boolean {
  return b.length >= 4 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46;
}

class Reader {
  constructor(
    private readonly src: Source,
    readonly bits: 32 | 64,
    readonly le: boolean,
  ) {}

  /** Exactly `length` bytes at `offset`, or an ElfError saying which part is cut off. */
  bytes(offset: number, length: number, what: string): Buffer {
    if (offset < 0 || length < 0 || offset + length > this.src.size) {
      throw new ElfError(
        `truncated ELF file: ${what} at offset ${offset} (+${length} bytes) lies beyond the end of the file (${this.src.size} bytes)`,
      );
    }
    const b = this.src.read(offset, length);
    if (b.length < length)
      throw new ElfError(`truncated ELF file: short read of ${what} at offset ${offset}`);
    return b;
  }

  u16(b: Buffer, at: number): number {
    return this.le ? b.readUInt16LE(at) : b.readUInt16BE(at);
  }
  u32(b: Buffer, at: number): number {
    return this.le ? b.readUInt32LE(at) : b.readUInt32BE(at);
  }
  /** A word (address, offset, size): 4 or 8 bytes. Values beyond 2^53 cannot be real offsets. */
  word(b: Buffer, at: number, what: string): number {
    if (this.bits === 32) return this.u32(b, at);
    const v = this.le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw new ElfError(`corrupt ELF file: ${what} is out of range (${v})`);
    return Number(v);
  }
  /** A signed word (d_tag); unknown huge tags are returned as -1 so they match nothing. */
  sword(b: Buffer, at: number): number {
    if (this.bits === 32) return this.le ? b.readInt32LE(at) : b.readInt32BE(at);
    const v = this.le ? b.readBigInt64LE(at) : b.readBigInt64BE(at);
    return v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)
      ? -1
      : Number(v);
  }

  /** NUL-terminated string at `offset`, not reading past `limit`. */
  cstring(offset: number, limit: number, what: string): string {
    const end = Math.min(limit, this.src.size, offset + MAX_STRING);
    if (offset < 0 || offset >= end) {
      throw new ElfError(
        `corrupt ELF file: ${what} at offset ${offset} lies outside its table or the file`,
      );
    }
    const b = this.src.read(offset, end - offset);
    const nul = b.indexOf(0);
    if (nul < 0)
      throw new ElfError(`corrupt ELF file: ${what} at offset ${offset} is not NUL-terminated`);
    return b.subarray(0, nul).toString('utf8');
  }
}

interface Segment {
  type: number;
  offset: number;
  vaddr: number;
  filesz: number;
}

function elfType(t: number): ElfType {
  switch (t) {
    case 1:
      return 'REL';
    case 2:
      return 'EXEC';
    case 3:
      return 'DYN';
    case 4:
      return 'CORE';
    default:
      return 'OTHER';
  }
}

function parse(src: Source): ElfInfo | undefined {
  const ident = src.read(0, 16);
  if (!isElfMagic(ident)) return undefined;
  if (ident.length < 16)
    throw new ElfError(`truncated ELF file: only ${src.size} bytes, the identification needs 16`);
  const cls = ident[4];
  const data = ident[5];
  if (cls !== 1 && cls !== 2)
    throw new ElfError(
      `corrupt ELF file: unknown class ${cls} (expected 1 for 32-bit or 2 for 64-bit)`,
    );
  if (data !== 1 && data !== 2)
    throw new ElfError(`corrupt ELF file: unknown data encoding ${data} (expected 1 or 2)`);
  const bits = cls === 2 ? 64 : 32;
  const r = new Reader(src, bits, data === 1);

  const ehsize = bits === 64 ? 64 : 52;
  const eh = r.bytes(0, ehsize, 'ELF header');
  const type = elfType(r.u16(eh, 16));
  const machine = r.u16(eh, 18);
  const phoff = r.word(eh, bits === 64 ? 32 : 28, 'e_phoff');
  const shoff = r.word(eh, bits === 64 ? 40 : 32, 'e_shoff');
  const phentsize = r.u16(eh, bits === 64 ? 54 : 42);
  let phnum = r.u16(eh, bits === 64 ? 56 : 44);
  const shentsize = r.u16(eh, bits === 64 ? 58 : 46);

  // More than 0xfffe program headers: the real count lives in section header 0's sh_info.
  if (phnum === PN_XNUM && shoff > 0) {
    const sh0 = r.bytes(shoff, Math.max(shentsize, bits === 64 ? 64 : 40), 'section header 0');
    phnum = r.u32(sh0, bits === 64 ? 44 : 28);
  }

  const segments: Segment[] = [];
  if (phnum > 0 && phoff > 0) {
    const minEnt = bits === 64 ? 56 : 32;
    if (phentsize < minEnt)
      throw new ElfError(`corrupt ELF file: program header entry size ${phentsize} < ${minEnt}`);
    const table = r.bytes(phoff, phentsize * phnum, `program header table (${phnum} entries)`);
    for (let i = 0; i < phnum; i++) {
      const p = table.subarray(i * phentsize, (i + 1) * phentsize);
      segments.push(
        bits === 64
          ? {
              type: r.u32(p, 0),
              offset: r.word(p, 8, 'p_offset'),
              vaddr: r.word(p, 16, 'p_vaddr'),
              filesz: r.word(p, 32, 'p_filesz'),
            }
          : {
              type: r.u32(p, 0),
              offset: r.word(p, 4, 'p_offset'),
              vaddr: r.word(p, 8, 'p_vaddr'),
              filesz: r.word(p, 16, 'p_filesz'),
            },
      );
    }
  }

  let interp: string | undefined;
  const interpSeg = segments.find((s) => s.type === PT_INTERP);
  if (interpSeg) {
    const b = r.bytes(interpSeg.offset, interpSeg.filesz, 'PT_INTERP');
    const nul = b.indexOf(0);
    interp = b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
  }

  const needed: string[] = [];
  let runpath: string[] = [];
  let soname: string | undefined;
  const dynSeg = segments.find((s) => s.type === PT_DYNAMIC);
  if (dynSeg && dynSeg.filesz > 0) {
    const entsize = bits === 64 ? 16 : 8;
    const dyn = r.bytes(dynSeg.offset, dynSeg.filesz, 'PT_DYNAMIC');
    const entries: { tag: number; val: number }[] = [];
    for (let at = 0; at + entsize <= dyn.length; at += entsize) {
      const tag = r.sword(dyn, at);
      if (tag === DT_NULL) break;
      entries.push({ tag, val: r.word(dyn, at + entsize / 2, 'd_val') });
    }
    const strtabAddr = entries.find((e) => e.tag === DT_STRTAB)?.val;
    const strsz = entries.find((e) => e.tag === DT_STRSZ)?.val;
    const stringTags = new Set([DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH]);
    if (entries.some((e) => stringTags.has(e.tag))) {
      if (strtabAddr === undefined)
        throw new ElfError('corrupt ELF file: PT_DYNAMIC has string entries but no DT_STRTAB');
      const strtab = vaddrToOffset(segments, strtabAddr);
      if (strtab === undefined) {
        throw new ElfError(
          `corrupt ELF file: DT_STRTAB address 0x${strtabAddr.toString(16)} is not mapped by any PT_LOAD`,
        );
      }
      const limit = strsz !== undefined ? strtab + strsz : src.size;
      const str = (e: { tag: number; val: number }, what: string) =>
        r.cstring(strtab + e.val, limit, what);
      let rpath: string[] = [];
      for (const e of entries) {
        if (e.tag === DT_NEEDED) needed.push(str(e, 'DT_NEEDED'));
        else if (e.tag === DT_SONAME) soname = str(e, 'DT_SONAME');
        else if (e.tag === DT_RUNPATH) runpath = splitPath(str(e, 'DT_RUNPATH'));
        else if (e.tag === DT_RPATH) rpath = splitPath(str(e, 'DT_RPATH'));
      }
      // The loader ignores DT_RPATH when DT_RUNPATH is present.
      if (!entries.some((e) => e.tag === DT_RUNPATH)) runpath = rpath;
    }
  }

  return {
    bits,
    littleEndian: r.le,
    machine,
    machineName: machineName(machine),
    type,
    ...(interp !== undefined ? { interp } : {}),
    needed,
    runpath,
    ...(soname !== undefined ? { soname } : {}),
    isStatic: interp === undefined && needed.length === 0,
  };
}

function splitPath(s: string): string[] {
  return s.split(':').filter((p) => p.length > 0);
}

/** File offset of a virtual address, through the PT_LOAD segment that maps it. */
function vaddrToOffset(segments: readonly Segment[], addr: number): number | undefined {
  for (const s of segments) {
    if (s.type === PT_LOAD && addr >= s.vaddr && addr < s.vaddr + s.filesz)
      return addr - s.vaddr + s.offset;
  }
  return undefined;
}

/** Parses an ELF file held in memory; undefined when it does not start with the ELF magic. */
export function parseElf(buf: Buffer): ElfInfo | undefined {
  return parse({
    size: buf.length,
    read: (offset, length) => buf.subarray(offset, Math.min(buf.length, offset + length)),
  });
}

/**
 * Reads only the parts of the file the headers point at (a few KB), so scanning every file of a
 * root stays cheap. Undefined when the file is not a regular file or not ELF; errors name the file.
 */
export async function readElf(file: string): Promise<ElfInfo | undefined> {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; anything but a regular file is not ELF.
  const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) return undefined;
    const { size } = st;
    // Headers, program headers and the dynamic section sit near the start of real binaries:
    // one read covers them, and anything else is read on demand (synchronously from the cache).
    const head = Buffer.alloc(Math.min(size, 64 * 1024));
    await fh.read(head, 0, head.length, 0);
    if (!isElfMagic(head)) return undefined;
    const extra = new Map<string, Buffer>();
    const pending: { offset: number; length: number }[] = [];
    const src: Source = {
      size,
      read(offset, length) {
        const end = Math.min(size, offset + length);
        if (end <= head.length) return head.subarray(offset, end);
        const key = `${offset}:${end}`;
        const hit = extra.get(key);
        if (hit) return hit;
        pending.push({ offset, length: end - offset });
        throw NEED_MORE;
      },
    };
    // Re-run the (cheap, pure) parse until every range it asked for has been read.
    for (let round = 0; round < 64; round++) {
      try {
        return parse(src);
      } catch (e) {
        if (e !== NEED_MORE) {
          if (e instanceof ElfError) throw new ElfError(`${file}: ${e.message}`);
          throw e;
        }
        for (const p of pending.splice(0)) {
          const b = Buffer.alloc(p.length);
          const { bytesRead } = await fh.read(b, 0, p.length, p.offset);
          extra.set(`${p.offset}:${p.offset + p.length}`, b.subarray(0, bytesRead));
        }
      }
    }
    throw new ElfError(`${file}: too many scattered reads while parsing ELF headers`);
  } finally {
    await fh.close();
  }
}

const NEED_MORE = Symbol('need more bytes');

const MACHINE_FOR_ARCH = { aarch64: EM_AARCH64, x86_64: EM_X86_64 } as const;

/**
 * What keeps a binary from running alone in an empty root of the given architecture;
 * empty when it is a 64-bit static executable for that machine.
 */
export function staticProblems(
  info: ElfInfo | undefined,
  arch: keyof typeof MACHINE_FOR_ARCH = 'aarch64',
): string[] {
  if (!info) return ['not an ELF file'];
  const problems: string[] = [];
  if (info.bits !== 64) problems.push(`ELFCLASS${info.bits}, expected ELFCLASS64`);
  if (info.machine !== MACHINE_FOR_ARCH[arch])
    problems.push(`machine ${info.machineName}, expected ${arch}`);
  if (info.interp !== undefined)
    problems.push(`has PT_INTERP ${info.interp}, expected none (static)`);
  if (info.needed.length > 0)
    problems.push(`has DT_NEEDED ${info.needed.join(', ')}, expected none (static)`);
  return problems;
}
