/**
 * An Alpine-shaped aarch64 rootfs tarball built from Debian arm64 packages (the Alpine CDN is not
 * reachable from our machines): busybox-static as /bin/busybox, musl's loader as
 * /lib/ld-musl-aarch64.so.1, and every busybox applet as an ABSOLUTE symlink to /bin/busybox,
 * exactly like Alpine's minirootfs — the shape that breaks extractors which rewrite links.
 * Real aarch64 code, so commands in it run under QEMU in nspawn.
 *
 * Cached in $LHC_TEST_CACHE (default /var/cache/lhc-test)/alpine-like, keyed by the .deb files.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { run } from '../../src/tools/exec.js';
import { buildTar, type TarEntry } from './tar-builder.js';
import { testCacheDir } from './debian-inputs.js';

export { testCacheDir };

const DEBS = ['busybox-static:arm64', 'musl:arm64'] as const;

/** Downloads the .debs once into the cache; returns their paths. */
export async function alpineLikeDebs(): Promise<string[]> {
  const dir = path.join(testCacheDir(), 'debs');
  await mkdir(dir, { recursive: true });
  const have = () => readdirSync(dir).filter((f) => f.endsWith('_arm64.deb'));
  const find = (pkg: string) => have().find((f) => f.startsWith(`${pkg.split(':')[0]}_`));
  const missing = DEBS.filter((p) => !find(p));
  if (missing.length > 0) {
    const r = await run(['apt-get', 'download', ...missing], {
      cwd: dir,
      reject: false,
      timeoutMs: 5 * 60_000,
    });
    if (r.exitCode !== 0) {
      throw new Error(
        `apt-get download ${missing.join(' ')} failed (needs the arm64 foreign architecture: ` +
          `dpkg --add-architecture arm64 && apt-get update):\n${r.stderr}`,
      );
    }
  }
  return DEBS.map((p) => path.join(dir, find(p)!));
}

const DIRS = [
  'bin',
  'dev',
  'etc',
  'home',
  'lib',
  'media',
  'mnt',
  'opt',
  'proc',
  'root',
  'run',
  'sbin',
  'srv',
  'sys',
  'tmp',
  'usr',
  'usr/bin',
  'usr/lib',
  'usr/local',
  'usr/sbin',
  'usr/share',
  'var',
  'var/cache',
  'var/lib',
  'var/log',
  'var/tmp',
];

/** The entries of the Alpine-shaped tree, from the unpacked .debs in `staging`. */
async function entries(staging: string): Promise<TarEntry[]> {
  const busybox = readFileSync(path.join(staging, 'bin/busybox'));
  const musl = readFileSync(path.join(staging, 'lib/aarch64-linux-musl/libc.so'));
  // The applet list comes from busybox itself (run under QEMU through binfmt).
  const list = await run([path.join(staging, 'bin/busybox'), '--list-full'], { reject: false });
  if (list.exitCode !== 0) {
    throw new Error(
      `cannot run the aarch64 busybox (is qemu-user-static installed and binfmt_misc registered?): ${list.stderr}`,
    );
  }
  const applets = list.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && l !== 'bin/busybox' && !l.includes('..'))
    .sort();
  const out: TarEntry[] = [{ name: './', type: 'dir' }];
  for (const d of DIRS)
    out.push({
      name: `./${d}/`,
      type: 'dir',
      mode: d === 'tmp' || d === 'var/tmp' ? 0o1777 : d === 'root' ? 0o700 : 0o755,
    });
  out.push({ name: './bin/busybox', data: busybox, mode: 0o755 });
  out.push({ name: './lib/ld-musl-aarch64.so.1', data: musl, mode: 0o755 });
  out.push({ name: './lib/libc.musl-aarch64.so.1', type: 'symlink', link: 'ld-musl-aarch64.so.1' });
  for (const a of applets) out.push({ name: `./${a}`, type: 'symlink', link: '/bin/busybox' });
  out.push({
    name: './etc/os-release',
    data: 'NAME="Alpine-like (lhc test)"\nID=alpine\nVERSION_ID=3.20.0\n',
  });
  out.push({
    name: './etc/passwd',
    data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n',
  });
  out.push({ name: './etc/group', data: 'root:x:0:root\nnogroup:x:65534:\n' });
  out.push({ name: './etc/hostname', data: 'localhost\n' });
  out.push({ name: './etc/alpine-release', data: '3.20.0\n' });
  return out;
}

export interface AlpineLike {
  gz: string;
  xz: string;
  /** Number of absolute applet symlinks (e.g. bin/sh -> /bin/busybox). */
  applets: number;
}

/** Builds (once) and returns the Alpine-shaped rootfs as .tar.gz and .tar.xz. */
export async function alpineLikeRootfs(): Promise<AlpineLike> {
  const debs = await alpineLikeDebs();
  const key = createHash('sha256')
    .update(debs.map((d) => path.basename(d)).join('\n'))
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(testCacheDir(), 'alpine-like');
  const gz = path.join(dir, `alpine-like-aarch64-${key}.tar.gz`);
  const xz = path.join(dir, `alpine-like-aarch64-${key}.tar.xz`);
  const meta = path.join(dir, `alpine-like-aarch64-${key}.applets`);
  if (existsSync(gz) && existsSync(xz) && existsSync(meta)) {
    return { gz, xz, applets: Number(readFileSync(meta, 'utf8')) };
  }
  await mkdir(dir, { recursive: true });
  const staging = await mkdtemp(path.join(dir, '.staging-'));
  try {
    for (const deb of debs) await run(['dpkg-deb', '-x', deb, staging]);
    if (!lstatSync(path.join(staging, 'bin/busybox')).isFile())
      throw new Error('busybox-static has no bin/busybox');
    const list = await entries(staging);
    const tar = buildTar(list);
    const xzBytes = (
      await run(['xz', '-z', '-c', '-6'], { input: tar, binary: true, timeoutMs: 5 * 60_000 })
    ).stdoutBytes;
    // Write under temp names and rename, so a concurrent or interrupted run never sees half a file.
    await writeFile(`${gz}.tmp`, gzipSync(tar));
    await writeFile(`${xz}.tmp`, xzBytes);
    await rename(`${gz}.tmp`, gz);
    await rename(`${xz}.tmp`, xz);
    const applets = list.filter((e) => e.type === 'symlink' && e.link === '/bin/busybox').length;
    await writeFile(meta, String(applets));
    return { gz, xz, applets };
  } finally {
    await rm(staging, { recursive: true, force: true });
    // Leftover temp files from an interrupted earlier run.
    for (const f of await readdir(dir))
      if (f.endsWith('.tmp')) await rm(path.join(dir, f), { force: true });
  }
}
