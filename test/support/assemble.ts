/**
 * The in-image helpers (lhc-run-as, lhc-accept) keep their code as bytes beside the .S source it
 * was assembled from; their tests assemble the source again with binutils and compare.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Arch } from '../../src/elf/static-elf.js';

const TOOLS: Record<Arch, [string, string]> = {
  aarch64: ['aarch64-linux-gnu-as', 'aarch64-linux-gnu-objcopy'],
  x86_64: ['as', 'objcopy'],
};

/** The .text bytes of `source` assembled for `arch`, as hex; scratch files go to `tmp`. */
export function assembledHex(arch: Arch, source: string, tmp: string): string {
  const [as, objcopy] = TOOLS[arch];
  for (const tool of [as, objcopy])
    if (spawnSync(tool, ['--version']).status !== 0)
      throw new Error(`${tool} is missing: apt-get install binutils (or run: lhc setup)`);
  const base = path.join(tmp, `${path.basename(source)}.${arch}`);
  execFileSync(as, ['-o', `${base}.o`, source]);
  execFileSync(objcopy, ['-O', 'binary', '-j', '.text', `${base}.o`, `${base}.bin`]);
  return readFileSync(`${base}.bin`).toString('hex');
}
