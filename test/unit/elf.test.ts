import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ElfError, parseElf, readElf, staticProblems, type ElfInfo } from '../../src/elf/elf.js';
import { run } from '../../src/tools/exec.js';
import { readelf, type ReadelfView } from '../support/readelf.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-elf-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function expectMatches(info: ElfInfo | undefined, ref: ReadelfView): void {
  expect(info).toBeDefined();
  expect(info!.bits).toBe(ref.bits);
  expect(info!.littleEndian).toBe(ref.littleEndian);
  // readelf names other machines in prose ("MIPS R3000"); those are checked by number instead.
  if (ref.machineName === 'aarch64' || ref.machineName === 'x86_64')
    expect(info!.machineName).toBe(ref.machineName);
  expect(info!.type).toBe(ref.type);
  expect(info!.interp).toBe(ref.interp);
  expect(info!.needed).toEqual(ref.needed);
  expect(info!.runpath).toEqual(ref.runpath.length > 0 ? ref.runpath : ref.rpath);
  expect(info!.soname).toBe(ref.soname);
  expect(info!.isStatic).toBe(ref.interp === undefined && ref.needed.length === 0);
}

/**
 * A minimal ELF executable for any class and byte order: ELF header, PT_LOAD (the whole file),
 * PT_INTERP, PT_DYNAMIC, then the interpreter string, string table and dynamic array. readelf
 * reads it back, so expectations still come from an independent tool.
 */
function buildElf(opts: {
  bits: 32 | 64;
  le: boolean;
  machine: number;
  interp?: string;
  needed: string[];
  runpath?: string;
  rpath?: string;
  soname?: string;
}): Buffer {
  const { bits, le } = opts;
  const base = 0x400000;
  const ehsize = bits === 64 ? 64 : 52;
  const phentsize = bits === 64 ? 56 : 32;
  const dynent = bits === 64 ? 16 : 8;
  const phnum = opts.interp ? 3 : 2;
  const phoff = ehsize;
  let off = phoff + phnum * phentsize;
  const interpBytes = opts.interp ? Buffer.from(`${opts.interp}\0`) : Buffer.alloc(0);
  const interpOff = off;
  off += interpBytes.length;
  const strs: string[] = [''];
  const strIndex = (s: string) => {
    const at = Buffer.byteLength(strs.join('\0')) + 1;
    strs.push(s);
    return at;
  };
  const dyn: [number, number][] = [];
  for (const n of opts.needed) dyn.push([1, strIndex(n)]);
  if (opts.soname) dyn.push([14, strIndex(opts.soname)]);
  if (opts.rpath) dyn.push([15, strIndex(opts.rpath)]);
  if (opts.runpath) dyn.push([29, strIndex(opts.runpath)]);
  const strtab = Buffer.from(`${strs.join('\0')}\0`);
  const strOff = off;
  off += strtab.length;
  off = (off + 7) & ~7;
  const dynOff = off;
  dyn.push([5, base + strOff], [10, strtab.length], [0, 0]);
  const size = dynOff + dyn.length * dynent;
  const b = Buffer.alloc(size);
  const u16 = (v: number, at: number) => (le ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
  const u32 = (v: number, at: number) => (le ? b.writeUInt32LE(v, at) : b.writeUInt32BE(v, at));
  const word = (v: number, at: number) =>
    bits === 32
      ? u32(v, at)
      : le
        ? b.writeBigUInt64LE(BigInt(v), at)
        : b.writeBigUInt64BE(BigInt(v), at);
  b.set([0x7f, 0x45, 0x4c, 0x46, bits === 64 ? 2 : 1, le ? 1 : 2, 1], 0);
  u16(2, 16);
  u16(opts.machine, 18);
  u32(1, 20);
  word(base, 24);
  word(phoff, bits === 64 ? 32 : 28);
  u16(ehsize, bits === 64 ? 52 : 40);
  u16(phentsize, bits === 64 ? 54 : 42);
  u16(phnum, bits === 64 ? 56 : 44);
  u16(bits === 64 ? 64 : 40, bits === 64 ? 58 : 46);
  const phdr = (i: number, type: number, offset: number, filesz: number) => {
    const at = phoff + i * phentsize;
    u32(type, at);
    if (bits === 64) {
      u32(4, at + 4);
      word(offset, at + 8);
      word(base + offset, at + 16);
      word(base + offset, at + 24);
      word(filesz, at + 32);
      word(filesz, at + 40);
      word(type === 1 ? 0x1000 : 8, at + 48);
    } else {
      word(offset, at + 4);
      word(base + offset, at + 8);
      word(base + offset, at + 12);
      word(filesz, at + 16);
      word(filesz, at + 20);
      u32(4, at + 24);
      word(type === 1 ? 0x1000 : 4, at + 28);
    }
  };
  let i = 0;
  if (opts.interp) phdr(i++, 3, interpOff, interpBytes.length);
  phdr(i++, 1, 0, size);
  phdr(i++, 2, dynOff, dyn.length * dynent);
  interpBytes.copy(b, interpOff);
  strtab.copy(b, strOff);
  dyn.forEach(([tag, val], k) => {
    if (bits === 64) {
      (le ? b.writeBigInt64LE.bind(b) : b.writeBigInt64BE.bind(b))(BigInt(tag), dynOff + k * 16);
      word(val, dynOff + k * 16 + 8);
    } else {
      u32(tag, dynOff + k * 8);
      u32(val, dynOff + k * 8 + 4);
    }
  });
  return b;
}

describe('parseElf on host binaries, checked against readelf', () => {
  it('/bin/ls: dynamic x86_64 with interpreter and libc', async () => {
    const info = parseElf(await readFile('/bin/ls'));
    expectMatches(info, await readelf('/bin/ls'));
    expect(info!.needed).toContain('libc.so.6');
    expect(info!.interp).toMatch(/ld-linux/);
    expect(info!.isStatic).toBe(false);
  });

  it('libc.so.6: a shared library with a soname', async () => {
    const libc = path.join(
      '/lib',
      `${os.arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
      'libc.so.6',
    );
    const info = await readElf(libc);
    expectMatches(info, await readelf(libc));
    expect(info!.soname).toBe('libc.so.6');
  });

  it('readElf and parseElf agree', async () => {
    expect(await readElf('/bin/ls')).toEqual(parseElf(await readFile('/bin/ls')));
  });

  it('returns undefined for a file that is not ELF', async () => {
    expect(parseElf(Buffer.from('#!/bin/sh\necho hi\n'))).toBeUndefined();
    expect(parseElf(Buffer.alloc(0))).toBeUndefined();
    expect(await readElf('/etc/os-release')).toBeUndefined();
    expect(await readElf('/dev/null')).toBeUndefined();
    const fifo = path.join(tmp, 'fifo');
    await run(['mkfifo', fifo]);
    // A FIFO with no writer must not block.
    expect(await readElf(fifo)).toBeUndefined();
  });
});

describe('parseElf on every class and byte order', () => {
  const variants = [
    { bits: 64 as const, le: true, machine: 183 },
    { bits: 64 as const, le: false, machine: 22 },
    { bits: 32 as const, le: true, machine: 40 },
    { bits: 32 as const, le: false, machine: 8 },
  ];
  for (const v of variants) {
    it(`ELF${v.bits} ${v.le ? 'little' : 'big'} endian, machine ${v.machine}`, async () => {
      const buf = buildElf({
        ...v,
        interp: '/lib/ld-test.so.1',
        needed: ['liba.so.1', 'libb.so.2'],
        runpath: '/opt/x/lib:$ORIGIN/../lib',
        rpath: '/ignored/because/runpath',
      });
      const file = path.join(tmp, `synthetic-${v.bits}-${v.le}.elf`);
      await writeFile(file, buf);
      const ref = await readelf(file);
      // Guards the oracle itself: readelf must have understood the synthetic file.
      expect(ref.needed).toEqual(['liba.so.1', 'libb.so.2']);
      const info = parseElf(buf);
      expectMatches(info, ref);
      expect(info!.machine).toBe(v.machine);
      expect(await readElf(file)).toEqual(info);
    });
  }

  it('uses DT_RPATH when there is no DT_RUNPATH, and reads a soname', async () => {
    const buf = buildElf({
      bits: 64,
      le: true,
      machine: 62,
      needed: ['libz.so.1'],
      rpath: '/a:/b',
      soname: 'libme.so.3',
    });
    const file = path.join(tmp, 'rpath.elf');
    await writeFile(file, buf);
    const ref = await readelf(file);
    expect(ref.rpath).toEqual(['/a', '/b']);
    expectMatches(parseElf(buf), ref);
  });

  it('a static executable has no interpreter and no needed libraries', () => {
    const info = parseElf(buildElf({ bits: 64, le: true, machine: 183, needed: [] }));
    expect(info!.isStatic).toBe(true);
    expect(staticProblems(info, 'aarch64')).toEqual([]);
    expect(staticProblems(info, 'x86_64')).toEqual(['machine aarch64, expected x86_64']);
  });

  it('staticProblems names every failed check', () => {
    const info = parseElf(
      buildElf({ bits: 32, le: true, machine: 40, interp: '/lib/ld.so', needed: ['libc.so'] }),
    );
    const problems = staticProblems(info, 'aarch64');
    expect(problems).toHaveLength(4);
    expect(problems.join('\n')).toMatch(
      /ELFCLASS32.*\n.*machine arm.*\n.*PT_INTERP \/lib\/ld.so.*\n.*DT_NEEDED libc.so/,
    );
    expect(staticProblems(undefined)).toEqual(['not an ELF file']);
  });
});

describe('parseElf on damaged input', () => {
  it('a truncated file gives an ElfError naming what is cut off', async () => {
    const ls = await readFile('/bin/ls');
    expect(() => parseElf(ls.subarray(0, 10))).toThrow(/truncated ELF file: only 10 bytes/);
    expect(() => parseElf(ls.subarray(0, 40))).toThrow(/truncated ELF file: ELF header/);
    expect(() => parseElf(ls.subarray(0, 100))).toThrow(/truncated ELF file: program header table/);
    // Headers intact, dynamic section and string table gone.
    expect(() => parseElf(ls.subarray(0, 4096))).toThrow(ElfError);
    const file = path.join(tmp, 'ls.truncated');
    await writeFile(file, ls.subarray(0, 4096));
    await expect(readElf(file)).rejects.toThrow(new RegExp(`^${file}: truncated ELF file`));
  });

  it('random corruption ends in a result or an ElfError, never another exception', async () => {
    const ls = await readFile('/bin/ls');
    const started = Date.now();
    for (let round = 0; round < 2000; round++) {
      const b = Buffer.from(ls.subarray(0, 64 * 1024));
      // Corrupt a few bytes in the headers, where offsets and counts live.
      const noise = randomBytes(8);
      for (let k = 0; k < 4; k++) b[4 + (noise.readUInt16LE(k * 2) % 1024)] = noise[k]!;
      try {
        parseElf(b);
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(ElfError);
      }
    }
    for (let round = 0; round < 500; round++) {
      const b = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), randomBytes(round * 4)]);
      try {
        parseElf(b);
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(ElfError);
      }
    }
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});
