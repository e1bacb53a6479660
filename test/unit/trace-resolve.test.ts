import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVirtual, resolveTraced } from '../../src/root/lookup.js';

let root: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'lhc-resolve-'));
  await mkdir(path.join(root, 'usr/bin'), { recursive: true });
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'usr/bin/busybox'), 'x');
  await symlink('usr/bin', path.join(root, 'bin'));
  await symlink('/bin/busybox', path.join(root, 'usr/bin/sh'));
  // Would point at the host's files if resolved with host path functions.
  await symlink('/etc/hostname', path.join(root, 'etc/escape'));
  await symlink('../../../../../../usr/bin/busybox', path.join(root, 'etc/dotdot'));
  await symlink('../proc/self/mounts', path.join(root, 'etc/mtab'));
  await symlink('loop-b', path.join(root, 'etc/loop-a'));
  await symlink('loop-a', path.join(root, 'etc/loop-b'));
  await writeFile(path.join(root, 'etc/file'), 'f');
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('resolveTraced', () => {
  it('follows absolute and relative symlinks inside the root, recording each one', () => {
    const r = resolveTraced(root, '/bin/sh');
    expect(r).toMatchObject({
      inRoot: '/usr/bin/busybox',
      exists: true,
      kind: 'file',
      virtual: false,
    });
    expect(r.symlinks).toEqual([
      { path: '/bin', target: 'usr/bin' },
      { path: '/usr/bin/sh', target: '/bin/busybox' },
      { path: '/bin', target: 'usr/bin' },
    ]);
  });

  it('never leaves the root: absolute targets restart at it, `..` stops at it', () => {
    const escape = resolveTraced(root, '/etc/escape');
    expect(escape.inRoot).toBe('/etc/hostname');
    expect(escape.exists).toBe(false);
    expect(resolveTraced(root, '/etc/dotdot')).toMatchObject({
      inRoot: '/usr/bin/busybox',
      exists: true,
    });
    expect(resolveTraced(root, '/../../usr/bin/busybox').inRoot).toBe('/usr/bin/busybox');
  });

  it('noFollow stops at a final symlink but still follows the ones on the way', () => {
    const r = resolveTraced(root, '/bin/sh', { noFollow: true });
    expect(r).toMatchObject({ inRoot: '/usr/bin/sh', kind: 'symlink', exists: true });
    expect(r.symlinks).toEqual([{ path: '/bin', target: 'usr/bin' }]);
  });

  it('reports failed lookups instead of throwing: missing parents, files used as dirs, loops', () => {
    expect(resolveTraced(root, '/nope/deeper/x').exists).toBe(false);
    expect(resolveTraced(root, '/etc/file/x').exists).toBe(false);
    expect(resolveTraced(root, '/etc/loop-a').exists).toBe(false);
  });

  it('marks /proc, /sys and /dev as virtual, also when reached through a symlink', () => {
    expect(resolveTraced(root, '/etc/mtab')).toMatchObject({ virtual: true, exists: false });
    expect(isVirtual('/dev/null')).toBe(true);
    expect(isVirtual('/device')).toBe(false);
  });
});
