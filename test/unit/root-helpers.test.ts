/** Pure pieces of the root stage: chroot-style resolution, mmdebstrap argv and sources, cache keys. */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveInRoot } from '../../src/root/resolve.js';
import { debianBaseKey, prepareCommand } from '../../src/stages/root.js';
import { hostMirrorLines, mmdebstrapArgv } from '../../src/tools/mmdebstrap.js';

describe('resolveInRoot', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'lhc-resolve-'));
    await mkdir(path.join(root, 'bin'));
    await mkdir(path.join(root, 'etc'));
    await writeFile(path.join(root, 'bin/busybox'), 'bb');
    await symlink('/bin/busybox', path.join(root, 'bin/sh'));
    await symlink('/etc/passwd', path.join(root, 'pw'));
    await symlink('../../../../../../etc', path.join(root, 'up'));
    await symlink('loop2', path.join(root, 'loop1'));
    await symlink('/loop1', path.join(root, 'loop2'));
    await symlink('usr/bin', path.join(root, 'ubin'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('follows absolute symlinks inside the root', () => {
    expect(resolveInRoot(root, '/bin/sh')).toEqual({
      inRoot: '/bin/busybox',
      host: path.join(root, 'bin/busybox'),
      exists: true,
    });
    expect(resolveInRoot(root, '/bin/sh', { followLast: false }).inRoot).toBe('/bin/sh');
  });

  it("never reaches the host's files", () => {
    // /etc/passwd exists on the host but not in this root.
    expect(resolveInRoot(root, '/pw')).toMatchObject({ inRoot: '/etc/passwd', exists: false });
    expect(resolveInRoot(root, '/up/passwd')).toMatchObject({
      inRoot: '/etc/passwd',
      exists: false,
    });
    expect(resolveInRoot(root, '../../..')).toMatchObject({ inRoot: '/', host: root });
  });

  it('reports loops and missing parents, and creates parents on request', () => {
    expect(() => resolveInRoot(root, '/loop1/x')).toThrow(/symlink loop/);
    expect(() => resolveInRoot(root, '/ubin/ls')).toThrow(/\/usr does not exist/);
    expect(resolveInRoot(root, '/ubin/ls', { createMissing: true })).toMatchObject({
      inRoot: '/usr/bin/ls',
      exists: false,
    });
    expect(() => resolveInRoot(root, '/bin/busybox/x')).toThrow(/not a directory/);
  });

  it('resolves relative paths against a cwd and reports the symlinks it followed', () => {
    const seen: string[] = [];
    expect(
      resolveInRoot(root, 'sh', { onSymlink: (p, t) => seen.push(`${p}->${t}`) }, '/bin').inRoot,
    ).toBe('/bin/busybox');
    expect(seen).toEqual(['/bin/sh->/bin/busybox']);
  });
});

describe('mmdebstrap', () => {
  const sources = `Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
`;

  it("builds one-line sources for the suite from the host's deb822 file", () => {
    expect(hostMirrorLines(sources, 'bookworm')).toEqual([
      'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main contrib',
      'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm-updates main contrib',
      'deb http://mirror.example/debian-security bookworm-security main',
    ]);
    expect(hostMirrorLines(sources, 'trixie')).toEqual([]);
  });

  it('builds the argv with sorted, unique packages', () => {
    expect(
      mmdebstrapArgv({
        arch: 'arm64',
        suite: 'bookworm',
        variant: 'minbase',
        packages: ['nginx-light', 'curl', 'curl'],
        output: '/o.tar',
        mirrors: ['deb X bookworm main'],
      }),
    ).toEqual([
      'mmdebstrap',
      '--arch=arm64',
      '--variant=minbase',
      '--format=tar',
      '--quiet',
      '--include=curl,nginx-light',
      'bookworm',
      '/o.tar',
      'deb X bookworm main',
    ]);
  });

  it('keys the cache by content, not by package order', () => {
    const a = debianBaseKey({
      arch: 'arm64',
      suite: 'bookworm',
      variant: 'minbase',
      packages: ['a', 'b'],
      mirrors: [],
    });
    expect(
      debianBaseKey({
        arch: 'arm64',
        suite: 'bookworm',
        variant: 'minbase',
        packages: ['b', 'a'],
        mirrors: [],
      }),
    ).toBe(a);
    expect(
      debianBaseKey({
        arch: 'arm64',
        suite: 'trixie',
        variant: 'minbase',
        packages: ['a', 'b'],
        mirrors: [],
      }),
    ).not.toBe(a);
  });
});

describe('prepareCommand', () => {
  it('runs a string through /bin/sh and a list as argv', () => {
    expect(prepareCommand('apk add --no-cache nginx')).toEqual([
      '/bin/sh',
      '-c',
      'apk add --no-cache nginx',
    ]);
    expect(prepareCommand(['/bin/busybox', 'true'])).toEqual(['/bin/busybox', 'true']);
  });
});
