import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readElf, staticProblems } from '../../src/elf/elf.js';
import { debianDeb, extractDeb } from '../support/debian-inputs.js';
import { readelf } from '../support/readelf.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-elf-arm64-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('readElf on real aarch64 binaries from Debian arm64 packages', () => {
  it('coreutils:arm64 ls is dynamic, with the aarch64 glibc loader', async () => {
    const root = await extractDeb(await debianDeb('coreutils:arm64'), path.join(tmp, 'coreutils'));
    const ls = path.join(root, 'bin/ls');
    const ref = await readelf(ls);
    const info = await readElf(ls);
    expect(ref.machineName).toBe('aarch64');
    expect(info).toMatchObject({
      bits: ref.bits,
      littleEndian: ref.littleEndian,
      machine: 183,
      machineName: 'aarch64',
      type: ref.type,
      interp: ref.interp,
      needed: ref.needed,
      isStatic: false,
    });
    expect(info!.needed).toContain('libc.so.6');
    expect(staticProblems(info, 'aarch64').join('\n')).toMatch(
      /PT_INTERP .*ld-linux-aarch64.*\n.*DT_NEEDED/,
    );
  });

  it('busybox-static:arm64 busybox is a static aarch64 executable', async () => {
    const root = await extractDeb(
      await debianDeb('busybox-static:arm64'),
      path.join(tmp, 'busybox'),
    );
    const bb = path.join(root, 'bin/busybox');
    const ref = await readelf(bb);
    const info = await readElf(bb);
    expect(ref.interp).toBeUndefined();
    expect(ref.needed).toEqual([]);
    expect(info).toMatchObject({
      bits: ref.bits,
      machineName: 'aarch64',
      type: ref.type,
      needed: [],
      isStatic: true,
    });
    expect(staticProblems(info, 'aarch64')).toEqual([]);
  });
});
