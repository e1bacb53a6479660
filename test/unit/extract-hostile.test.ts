/**
 * Hostile tarballs, built byte by byte in code: each must be refused (ExtractError naming the
 * entry) or contained, and nothing outside the extraction directory may be created or changed.
 * The extraction directory sits next to a sentinel directory in a private temp parent; the
 * parent's whole tree (minus the extraction dir) and the host's /etc/passwd are snapshotted
 * before and compared after every case.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ExtractError,
  detectCompression,
  extractTarball,
  type ExtractSummary,
} from '../../src/root/extract.js';
import { run } from '../../src/tools/exec.js';
import { buildTar, buildTarGz, tarHeader, type TarEntry } from '../support/tar-builder.js';

let parent: string;
let sentinel: string;
let dest: string;
let before: string;

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Everything under `dir` except the extraction target: type, mode, size, mtime, content hash, link target. */
function snapshot(dir: string, skip: string): string {
  const lines: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (p === skip) continue;
      const st = lstatSync(p);
      let what = `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
      if (st.isSymbolicLink()) what += ` -> ${readlinkSync(p)}`;
      else if (st.isFile()) what += ` ${sha(p)}`;
      lines.push(`${path.relative(dir, p)} ${what}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  const pw = statSync('/etc/passwd');
  lines.push(`/etc/passwd ${pw.mtimeMs} ${pw.size} ${sha('/etc/passwd')}`);
  // A few places a `../../` or absolute-path escape would land.
  for (const p of [
    '/etc/lhc-pwned',
    '/tmp/lhc-pwned',
    path.join(os.tmpdir(), 'lhc-pwned'),
    '/lhc-pwned',
  ]) {
    lines.push(`${p} ${existsSync(p)}`);
  }
  return lines.join('\n');
}

async function writeArchive(name: string, bytes: Buffer): Promise<string> {
  const file = path.join(parent, 'archives', name);
  await writeFile(file, bytes);
  return file;
}

async function refused(bytes: Buffer, reason: RegExp, entry?: string): Promise<ExtractError> {
  const file = await writeArchive('hostile.tar.gz', bytes);
  const err = await extractTarball(file, dest).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'archive should have been refused').toBeInstanceOf(ExtractError);
  const ee = err as ExtractError;
  expect(ee.message).toMatch(reason);
  if (entry !== undefined) expect(ee.entry).toBe(entry);
  expect(existsSync(dest), 'a refused extraction leaves no partial root').toBe(false);
  return ee;
}

beforeEach(async () => {
  parent = await mkdtemp(path.join(os.tmpdir(), 'lhc-extract-'));
  sentinel = path.join(parent, 'sentinel');
  dest = path.join(parent, 'root');
  await mkdir(sentinel);
  await mkdir(path.join(parent, 'archives'));
  await writeFile(path.join(sentinel, 'keep'), 'do not touch\n');
  before = snapshot(parent, dest);
});

afterEach(async () => {
  // The archives dir changes by design; compare everything else.
  const after = snapshot(parent, dest).replace(/^archives.*\n/gm, '');
  expect(after).toBe(before.replace(/^archives.*\n/gm, ''));
  await rm(parent, { recursive: true, force: true });
});

describe('hostile tarballs are refused or contained', () => {
  it('refuses a ../ entry', async () => {
    await refused(
      buildTarGz([
        { name: 'ok/', type: 'dir' },
        { name: 'ok/../../sentinel/pwned', data: 'x' },
      ]),
      /'\.\.'|"\.\."/,
      'ok/../../sentinel/pwned',
    );
  });

  it('refuses an absolute path entry', async () => {
    const abs = path.join(sentinel, 'pwned-abs');
    await refused(buildTarGz([{ name: abs, data: 'x' }]), /absolute path/, abs);
    expect(existsSync(abs)).toBe(false);
  });

  it('refuses etc -> /etc followed by etc/passwd, leaving the host /etc/passwd alone', async () => {
    await refused(
      buildTarGz([
        { name: 'etc', type: 'symlink', link: '/etc' },
        { name: 'etc/passwd', data: 'root::0:0::/:/bin/sh\n' },
      ]),
      /conflicts with a directory/,
      'etc',
    );
  });

  it('contains a symlink to a host directory followed by a symlink written through it', async () => {
    // out -> <host sentinel dir>, then out/evil -> x: the second one must land inside the root.
    const file = await writeArchive(
      'through.tar.gz',
      buildTarGz([
        { name: 'out', type: 'symlink', link: sentinel },
        { name: 'out/evil', type: 'symlink', link: '/etc/shadow' },
      ]),
    );
    const s = await extractTarball(file, dest);
    expect(s.symlinks).toBe(2);
    expect(readlinkSync(path.join(dest, 'out'))).toBe(sentinel);
    // The host-absolute target was resolved inside the root, chroot-style.
    expect(readlinkSync(path.join(dest, sentinel, 'evil'))).toBe('/etc/shadow');
    expect(existsSync(path.join(sentinel, 'evil'))).toBe(false);
  });

  it('contains a relative symlink climbing above the root, with a symlink written through it', async () => {
    const file = await writeArchive(
      'up.tar.gz',
      buildTarGz([
        { name: 'up', type: 'symlink', link: '../../../../../../../..' },
        { name: 'up/sentinel', type: 'symlink', link: '/etc/shadow' },
      ]),
    );
    const s = await extractTarball(file, dest);
    expect(s.symlinks).toBe(2);
    // `..` stops at the root, as in a chroot: the second link lands at the root's top level.
    expect(readlinkSync(path.join(dest, 'sentinel'))).toBe('/etc/shadow');
    expect(readlinkSync(path.join(dest, 'up'))).toBe('../../../../../../../..');
  });

  it('refuses a hardlink to a host file (/etc/passwd)', async () => {
    await refused(
      buildTarGz([{ name: 'passwd', type: 'hardlink', link: '/etc/passwd' }]),
      /hardlink target '\/etc\/passwd'.*absolute/,
      'passwd',
    );
  });

  it('refuses a hardlink climbing out with ..', async () => {
    await refused(
      buildTarGz([{ name: 'keep', type: 'hardlink', link: '../sentinel/keep' }]),
      /hardlink target.*"\.\."/,
      'keep',
    );
  });

  it('refuses a hardlink through a symlink from the same archive', async () => {
    await refused(
      buildTarGz([
        { name: 'hostetc', type: 'symlink', link: '/etc' },
        { name: 'stolen', type: 'hardlink', link: 'hostetc/passwd' },
      ]),
      /not a regular file extracted earlier/,
      'stolen',
    );
  });

  it('refuses a hardlink to a name that is not yet in the archive', async () => {
    await refused(
      buildTarGz([
        { name: 'early', type: 'hardlink', link: 'late' },
        { name: 'late', data: 'x' },
      ]),
      /not a regular file extracted earlier/,
      'early',
    );
  });

  it('skips device nodes and fifos, counting them', async () => {
    const file = await writeArchive(
      'dev.tar.gz',
      buildTarGz([
        { name: 'dev/', type: 'dir' },
        { name: 'dev/sda', type: 'blockdev', devmajor: 8, devminor: 0 },
        { name: 'dev/mem', type: 'chardev', devmajor: 1, devminor: 1 },
        { name: 'dev/initctl', type: 'fifo' },
        { name: 'ok', data: 'fine\n' },
      ]),
    );
    const s = await extractTarball(file, dest);
    expect(s.skipped).toEqual({ devices: 2, fifos: 1, other: 0 });
    expect(readdirSync(path.join(dest, 'dev'))).toEqual([]);
    expect(readFileSync(path.join(dest, 'ok'), 'utf8')).toBe('fine\n');
  });

  it('refuses a symlink loop followed by a file under it', async () => {
    await refused(
      buildTarGz([
        { name: 'a', type: 'symlink', link: 'b' },
        { name: 'b', type: 'symlink', link: 'a' },
        { name: 'a/x', data: 'x' },
      ]),
      /conflicts with a directory/,
      'a',
    );
  });

  it('refuses a symlink created under a symlink loop', async () => {
    await refused(
      buildTarGz([
        { name: 'a', type: 'symlink', link: 'b' },
        { name: 'b', type: 'symlink', link: '/a' },
        { name: 'a/x', type: 'symlink', link: 'y' },
      ]),
      /symlink loop/,
      'a/x',
    );
  });

  it('refuses a gzip decompression bomb above the cap', async () => {
    // 64 MiB of zeros as one file: about 64 KiB gzipped, a ratio near 1000.
    const size = 64 * 1024 * 1024;
    const tar = Buffer.concat([
      tarHeader({ name: 'zeros' }, size),
      Buffer.alloc(size),
      Buffer.alloc(1024),
    ]);
    const gz = gzipSync(tar);
    expect(tar.length / gz.length).toBeGreaterThan(200);
    // The message states the limits; it once suggested options (maxRatio/maxBytes) no config sets.
    await refused(
      gz,
      /refused as a decompression bomb \(lhc unpacks at most 200 times the compressed/,
    );
  });

  it('refuses an xz decompression bomb above the cap', async () => {
    const size = 64 * 1024 * 1024;
    const tar = Buffer.concat([
      tarHeader({ name: 'zeros' }, size),
      Buffer.alloc(size),
      Buffer.alloc(1024),
    ]);
    const xz = (await run(['xz', '-z', '-c', '-1'], { input: tar, binary: true })).stdoutBytes;
    await refused(xz, /decompression bomb/);
  });

  it('refuses a file replacing a directory, and a non-archive, and zstd', async () => {
    await refused(
      buildTarGz([
        { name: 'd/', type: 'dir' },
        { name: 'd', data: 'x' },
      ]),
      /directory already exists/,
      'd',
    );
    await refused(
      Buffer.from('this is not a tarball at all, just text\n'.repeat(40)),
      /not a (valid )?tar/,
    );
    await refused(
      Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(600)]),
      /zstd compression is not supported/,
    );
  });

  it('refuses when the target already exists', async () => {
    await mkdir(dest);
    const file = await writeArchive('ok.tar.gz', buildTarGz([{ name: 'x', data: 'x' }]));
    await expect(extractTarball(file, dest)).rejects.toThrow(/already exists/);
    await rm(dest, { recursive: true });
  });
});

describe('a benign Alpine-shaped archive', () => {
  const entries: TarEntry[] = [
    { name: './', type: 'dir', mode: 0o755 },
    { name: './bin/', type: 'dir' },
    { name: './bin/busybox', data: '\x7fELF pretend busybox', mode: 0o755 },
    { name: './bin/bbsuid', data: 'suid helper', mode: 0o4755 },
    { name: './bin/sh', type: 'symlink', link: '/bin/busybox' },
    { name: './bin/ls', type: 'symlink', link: '/bin/busybox' },
    { name: './lib/', type: 'dir' },
    { name: './lib/ld-musl-aarch64.so.1', data: 'loader', mode: 0o755 },
    { name: './lib/libc.musl-aarch64.so.1', type: 'symlink', link: 'ld-musl-aarch64.so.1' },
    { name: './etc/', type: 'dir' },
    { name: './etc/os-release', data: 'ID=alpine\n' },
    { name: './etc/hostname', type: 'hardlink', link: './etc/os-release' },
    { name: './tmp/', type: 'dir', mode: 0o1777 },
    { name: './readonly/', type: 'dir', mode: 0o555 },
    { name: './readonly/inside', data: 'written before the dir became read-only' },
    { name: './dev/null', type: 'chardev', devmajor: 1, devminor: 3 },
  ];

  async function check(file: string, compression: ExtractSummary['compression']) {
    const s = await extractTarball(file, dest);
    expect(s).toMatchObject({ compression, files: 5, symlinks: 3, hardlinks: 1, setidStripped: 1 });
    expect(s.skipped.devices).toBe(1);
    expect(s.bytes).toBe(
      entries.reduce((n, e) => n + (e.type === undefined ? Buffer.byteLength(e.data ?? '') : 0), 0),
    );
    // Absolute symlinks are kept verbatim (npm tar would have written bin/busybox).
    expect(readlinkSync(path.join(dest, 'bin/sh'))).toBe('/bin/busybox');
    expect(readlinkSync(path.join(dest, 'bin/ls'))).toBe('/bin/busybox');
    expect(readlinkSync(path.join(dest, 'lib/libc.musl-aarch64.so.1'))).toBe(
      'ld-musl-aarch64.so.1',
    );
    expect(statSync(path.join(dest, 'bin/busybox')).mode & 0o7777).toBe(0o755);
    expect(statSync(path.join(dest, 'bin/bbsuid')).mode & 0o7777).toBe(0o755);
    expect(statSync(path.join(dest, 'tmp')).mode & 0o7777).toBe(0o1777);
    expect(statSync(path.join(dest, 'readonly')).mode & 0o7777).toBe(0o555);
    expect(statSync(dest).mode & 0o7777).toBe(0o755);
    expect(statSync(path.join(dest, 'etc/hostname')).ino).toBe(
      statSync(path.join(dest, 'etc/os-release')).ino,
    );
    expect(readFileSync(path.join(dest, 'readonly/inside'), 'utf8')).toMatch(/written before/);
    expect(existsSync(path.join(dest, 'dev/null'))).toBe(false);
    await rm(dest, { recursive: true });
  }

  it('extracts .tar, .tar.gz and .tar.xz identically, detected by content', async () => {
    const tar = buildTar(entries);
    // Deliberately misleading names: the format comes from the magic bytes.
    await check(await writeArchive('rootfs.tar.xz', tar), 'none');
    await check(await writeArchive('rootfs.tar', gzipSync(tar)), 'gzip');
    const xz = (await run(['xz', '-z', '-c'], { input: tar, binary: true })).stdoutBytes;
    expect(detectCompression(xz)).toBe('xz');
    await check(await writeArchive('rootfs.tgz', xz), 'xz');
  });
});
