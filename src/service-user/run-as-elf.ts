/**
 * lhc-run-as: a static ELF of a few hundred bytes that drops to service.user's ids and execs the
 * service command. systemd-nspawn's own --user runs `getent` inside the container and makes the
 * user's home directory there, which a pruned (or scratch) root cannot support; this helper
 * needs nothing else in the image. The ids are baked into a data block after the code, which
 * also records the name and home so verify and the deploy bundle read them from the image
 * itself (the pruned image has no /etc/passwd).
 *
 * The code is run-as.<arch>.S next to this file, assembled once and kept here as bytes:
 *   aarch64-linux-gnu-as -o a.o run-as.aarch64.S && aarch64-linux-gnu-objcopy -O binary -j .text a.o a.bin
 *   as -o x.o run-as.x86_64.S && objcopy -O binary -j .text x.o x.bin
 * (test/integration/run-as.test.ts assembles them again and compares.)
 */
import { staticElf, type Arch } from '../elf/static-elf.js';
import type { RunAs } from './passwd.js';

export type { Arch };

/** Where the helper lives in the image. */
export const RUN_AS_PATH = '/usr/lib/lhc/lhc-run-as';
/** Its process name (comm) until it has exec'd the payload. */
export const RUN_AS_COMM = 'lhc-run-as';

/** The code of each arch; it ends 8-aligned, where the data block starts. */
export const RUN_AS_CODE: Record<Arch, string> = {
  aarch64:
    '49080010201540b921610091e81380d2010000d4000300b5201140b9e103002ae203002aa81280d2010000d4400200b5' +
    '200d40b9e103002ae203002a681280d2010000d4800100b5e30340f9e1430091200040f9a00000b4e26f238b42400091' +
    'a81b80d2010000d461030010e20580d20300001401010010020880d2400080d2080880d2010000d4e00f80d2c80b80d2' +
    '010000d46c68632d72756e2d61733a2063616e6e6f742073776974636820746f20736572766963652e75736572277320' +
    '7569642c2067696420616e642067726f7570730a6c68632d72756e2d61733a2063616e6e6f7420657865637574652074' +
    '6865207365727669636520636f6d6d616e640a001f2003d5',
  x86_64:
    '488d1df90000008b7b14488d7318b8740000000f054885c075518b7b1089fe89fab8770000000f054885c0753e8b7b0c' +
    '89fe89fab8750000000f054885c0752b488b0c24488d742410488b3e4885ff740c488d54cc10b83b0000000f05488d35' +
    '6b000000ba2f000000eb0c488d351d000000ba40000000bf02000000b8010000000f05bf7f000000b8e70000000f056c' +
    '68632d72756e2d61733a2063616e6e6f742073776974636820746f20736572766963652e757365722773207569642c20' +
    '67696420616e642067726f7570730a6c68632d72756e2d61733a2063616e6e6f74206578656375746520746865207365' +
    '727669636520636f6d6d616e640a6690',
};

const MAGIC = Buffer.from('LHCRUNAS', 'latin1');
const VERSION = 1;

/** The data block the code reads: magic, version, uid (+12), gid (+16), group count (+20), groups (+24), then name and home. */
function dataBlock(r: RunAs): Buffer {
  const ids = Buffer.alloc(24 + 4 * r.groups.length);
  MAGIC.copy(ids, 0);
  ids.writeUInt32LE(VERSION, 8);
  ids.writeUInt32LE(r.uid, 12);
  ids.writeUInt32LE(r.gid, 16);
  ids.writeUInt32LE(r.groups.length, 20);
  r.groups.forEach((g, i) => ids.writeUInt32LE(g, 24 + 4 * i));
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(2);
    len.writeUInt16LE(b.length);
    return [len, b];
  };
  return Buffer.concat([ids, ...str(r.name), ...str(r.home)]);
}

/** The helper for `arch`, dropping to `r`. */
export function runAsElf(arch: Arch, r: RunAs): Buffer {
  return staticElf(arch, Buffer.concat([Buffer.from(RUN_AS_CODE[arch], 'hex'), dataBlock(r)]));
}

/** The ids a helper drops to, read back from its data block; undefined for any other file. */
export function readRunAsElf(bytes: Buffer): RunAs | undefined {
  const at = bytes.indexOf(MAGIC);
  if (at < 0 || bytes.length < at + 24 || bytes.readUInt32LE(at + 8) !== VERSION) return undefined;
  const n = bytes.readUInt32LE(at + 20);
  let p = at + 24 + 4 * n;
  if (bytes.length < p) return undefined;
  const groups = Array.from({ length: n }, (_, i) => bytes.readUInt32LE(at + 24 + 4 * i));
  const str = () => {
    if (bytes.length < p + 2) return undefined;
    const len = bytes.readUInt16LE(p);
    const s = bytes.subarray(p + 2, p + 2 + len);
    p += 2 + len;
    return s.length === len ? s.toString('utf8') : undefined;
  };
  const name = str();
  const home = str();
  if (name === undefined || home === undefined) return undefined;
  return { name, uid: bytes.readUInt32LE(at + 12), gid: bytes.readUInt32LE(at + 16), groups, home };
}
