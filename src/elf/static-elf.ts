/**
 * The smallest static executable: an ELF header and one R+X PT_LOAD segment holding `body`,
 * entered at its first byte. lhc's in-image helpers (lhc-run-as, lhc-accept) are hand-written
 * code kept as bytes, so every build writes the same file without a compiler.
 */
/** The architectures a config can name (config.arch). */
export type Arch = 'aarch64' | 'x86_64';

const MACHINE: Record<Arch, number> = { aarch64: 183, x86_64: 62 };
const LOAD_ADDRESS = 0x400000n;
const EHDR = 64;
const PHDR = 56;

export function staticElf(arch: Arch, body: Buffer): Buffer {
  const size = BigInt(EHDR + PHDR + body.length);
  const h = Buffer.alloc(EHDR + PHDR);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(h, 0); // ELF64, little endian, SYSV
  h.writeUInt16LE(2, 16); // ET_EXEC
  h.writeUInt16LE(MACHINE[arch], 18);
  h.writeUInt32LE(1, 20);
  h.writeBigUInt64LE(LOAD_ADDRESS + BigInt(EHDR + PHDR), 24); // entry: the code
  h.writeBigUInt64LE(BigInt(EHDR), 32); // program headers
  h.writeUInt16LE(EHDR, 52);
  h.writeUInt16LE(PHDR, 54);
  h.writeUInt16LE(1, 56);
  h.writeUInt32LE(1, EHDR); // PT_LOAD
  h.writeUInt32LE(5, EHDR + 4); // R+X
  h.writeBigUInt64LE(LOAD_ADDRESS, EHDR + 16);
  h.writeBigUInt64LE(LOAD_ADDRESS, EHDR + 24);
  h.writeBigUInt64LE(size, EHDR + 32);
  h.writeBigUInt64LE(size, EHDR + 40);
  h.writeBigUInt64LE(0x10000n, EHDR + 48); // fits 4K and 64K pages
  return Buffer.concat([h, body]);
}
