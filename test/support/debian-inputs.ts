/**
 * Test inputs taken from Debian packages, because our machines cannot reach lua.org or the
 * Alpine CDN. Each input is fetched once into $LHC_TEST_CACHE (default /var/cache/lhc-test)
 * and verified by sha256 on every use; downloads land in a private temp dir and are renamed
 * into place, so concurrent test files never see a half-written file.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../../src/tools/exec.js';
import { realProbe } from '../../src/host/probe.js';
import { debSrcFile, hasDebSrc, packageState } from '../../src/host/setup.js';
import { Store, sha256File } from '../../src/store/store.js';

export { sha256File };

export function testCacheDir(): string {
  return process.env.LHC_TEST_CACHE || '/var/cache/lhc-test';
}

/** Upstream Lua tarballs as shipped (byte-identical) in Debian's source packages. */
export const LUA_SOURCES = {
  '5.4.4': {
    srcPackage: 'lua5.4',
    file: 'lua5.4_5.4.4.orig.tar.gz',
    sha256: '164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61',
  },
  '5.3.6': {
    srcPackage: 'lua5.3',
    file: 'lua5.3_5.3.6.orig.tar.gz',
    // Computed from bookworm's lua5.3_5.3.6.orig.tar.gz; equals the lua.org lua-5.3.6.tar.gz digest.
    sha256: 'fc5fd69bb8736323f026672b1b7235da613d7177e72558893a0bdcd320466d60',
  },
} as const;

export type LuaTestVersion = keyof typeof LUA_SOURCES;

/**
 * `apt-get source` needs deb-src entries; a fresh Debian VM has only `deb`. The same clone of the
 * distribution's sources that `lhc setup` writes, so a test file run on its own needs no setup.
 */
export async function ensureDebSrc(): Promise<void> {
  const { sources } = await packageState(realProbe);
  if (hasDebSrc(sources)) return;
  const f = debSrcFile(sources);
  if (!f) {
    throw new Error(
      'no deb-src apt source and no distribution sources to derive one from: add a deb-src entry for your mirror (needed by apt-get source)',
    );
  }
  await writeFile(f.file, f.text);
  await run(['apt-get', 'update', '-q'], { privileged: true, timeoutMs: 10 * 60_000 });
}

/** Returns `dest` once it exists with the expected digest; `produce(tmpDir)` must leave the file at tmpDir/basename(dest). */
export async function cached(
  dest: string,
  sha256: string | undefined,
  produce: (tmp: string) => Promise<void>,
): Promise<string> {
  if (existsSync(dest)) {
    if (!sha256 || (await sha256File(dest)) === sha256) return dest;
    await rm(dest, { force: true });
  }
  await mkdir(path.dirname(dest), { recursive: true });
  const tmp = await mkdtemp(path.join(path.dirname(dest), '.tmp-'));
  try {
    await produce(tmp);
    const made = path.join(tmp, path.basename(dest));
    if (!existsSync(made))
      throw new Error(
        `expected ${path.basename(dest)} after download, got: ${(await readdir(tmp)).join(', ')}`,
      );
    if (sha256) {
      const got = await sha256File(made);
      if (got !== sha256)
        throw new Error(`${path.basename(dest)}: sha256 ${got}, expected ${sha256}`);
    }
    await rename(made, dest);
    return dest;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The upstream Lua source tarball for `version`, from Debian's source package. */
export async function luaSourceTarball(
  version: LuaTestVersion = '5.4.4',
): Promise<{ path: string; sha256: string }> {
  const src = LUA_SOURCES[version];
  const dest = path.join(testCacheDir(), 'sources', src.file);
  await cached(dest, src.sha256, async (tmp) => {
    await ensureDebSrc();
    // Only the orig tarball matters; --download-only skips unpacking and patching.
    await run(['apt-get', 'source', '--download-only', '-q', src.srcPackage], {
      cwd: tmp,
      timeoutMs: 10 * 60_000,
    });
  });
  return { path: dest, sha256: src.sha256 };
}

/**
 * A binary package (`name:arch`) downloaded with `apt-get download` and cached by name;
 * returns the .deb path.
 */
export async function debianDeb(spec: string): Promise<string> {
  const dir = path.join(testCacheDir(), 'debs');
  await mkdir(dir, { recursive: true });
  const existing = (await readdir(dir)).find((f) => f.endsWith('.deb') && debMatches(f, spec));
  if (existing) return path.join(dir, existing);
  const tmp = await mkdtemp(path.join(dir, '.tmp-'));
  try {
    await run(['apt-get', 'download', '-q', spec], { cwd: tmp, timeoutMs: 10 * 60_000 });
    const debs = (await readdir(tmp)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1)
      throw new Error(
        `apt-get download ${spec}: expected one .deb, got ${debs.join(', ') || 'none'}`,
      );
    await rename(path.join(tmp, debs[0]!), path.join(dir, debs[0]!));
    return path.join(dir, debs[0]!);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function debMatches(file: string, spec: string): boolean {
  const [name, arch] = spec.split(':');
  // Debian file names: name_version_arch.deb
  const parts = file.replace(/\.deb$/, '').split('_');
  return parts[0] === name && (arch === undefined || parts[2] === arch);
}

/** Extracts a .deb's data into `dir` (created); returns dir. */
export async function extractDeb(deb: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await run(['dpkg-deb', '-x', deb, dir]);
  return dir;
}

/**
 * The cache and store a test's build() uses: shared across test files (a built Lua is reused),
 * with the Lua 5.4.4 source already in the store, so no build ever downloads.
 */
export async function seededBuildCache(): Promise<{ cacheDir: string; store: Store }> {
  const cacheDir = path.join(testCacheDir(), 'lhc-cache');
  const store = new Store(path.join(cacheDir, 'store'));
  await store.add((await luaSourceTarball('5.4.4')).path);
  return { cacheDir, store };
}
