/**
 * binutils' readelf as the independent oracle for the ELF parser: tests derive their expected
 * values from its output rather than from constants written by hand.
 */
import { run } from '../../src/tools/exec.js';

export interface ReadelfView {
  bits: 32 | 64;
  littleEndian: boolean;
  machineName: string;
  type: string;
  interp?: string;
  needed: string[];
  runpath: string[];
  rpath: string[];
  soname?: string;
}

function machineFromText(text: string): string {
  if (/AArch64/i.test(text)) return 'aarch64';
  if (/X86-64/i.test(text)) return 'x86_64';
  return text;
}

export async function readelf(file: string): Promise<ReadelfView> {
  const r = await run(['readelf', '-h', '-l', '-d', '-W', file], { reject: false });
  const out = r.stdout;
  const field = (name: string) =>
    new RegExp(`^\\s*${name}:\\s*(.*)$`, 'm').exec(out)?.[1]?.trim() ?? '';
  const all = (re: RegExp) => [...out.matchAll(re)].map((m) => m[1]!);
  const split = (xs: string[]) => xs.flatMap((x) => x.split(':')).filter(Boolean);
  const interp = /\[Requesting program interpreter: ([^\]]*)\]/.exec(out)?.[1];
  const soname = /\(SONAME\)\s+Library soname: \[([^\]]*)\]/.exec(out)?.[1];
  return {
    bits: field('Class') === 'ELF64' ? 64 : 32,
    littleEndian: /little endian/.test(field('Data')),
    machineName: machineFromText(field('Machine')),
    type: field('Type').split(' ')[0]!,
    ...(interp !== undefined ? { interp } : {}),
    needed: all(/\(NEEDED\)\s+Shared library: \[([^\]]*)\]/g),
    runpath: split(all(/\(RUNPATH\)\s+Library runpath: \[([^\]]*)\]/g)),
    rpath: split(all(/\(RPATH\)\s+Library rpath: \[([^\]]*)\]/g)),
    ...(soname !== undefined ? { soname } : {}),
  };
}
