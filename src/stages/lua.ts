/**
 * The `lua` stage: a static, stripped Lua interpreter for the image, built from a verified
 * source tarball and cached by everything that decides its bytes (source sha256, strategy,
 * architecture, toolchain versions, flags). A cache hit costs a few hashes and no compiler.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  copyFile,
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StageContext } from '../core/stage.js';
import { cacheDir as defaultCacheDir } from '../core/paths.js';
import { sha256File, type FetchOptions, type Store } from '../store/store.js';
import { run } from '../tools/exec.js';
import {
  crossMakeArgv,
  crossToolchain,
  inRootMakeArgv,
  type LuaArch,
  type LuaStrategy,
} from '../tools/lua-make.js';
import { compileInRoot, ensureBuildroot } from './lua-in-root.js';
import { extractLuaSource } from './lua-source.js';
import { verifyLua } from './lua-verify.js';

export type { LuaArch, LuaStrategy } from '../tools/lua-make.js';

export interface LuaBuildSpec {
  version: string;
  /** sha256 of the upstream source tarball lua-<version>.tar.gz. */
  sha256: string;
  /** Where to get the tarball when the store lacks it; default the lua.org release URL. */
  urls?: string[];
  arch: LuaArch;
  strategy: LuaStrategy;
}

/** What a build needs besides the spec: where its caches are. */
export interface LuaBuildInput extends LuaBuildSpec {
  /** Root of lhc's caches (built interpreters in <cacheDir>/lua, build roots in <cacheDir>/buildroots). */
  cacheDir?: string;
  /** Where in-root build roots are cached; default <cacheDir>/buildroots. */
  buildrootDir?: string;
  fetch?: FetchOptions;
}

interface LuaBuildOptions {
  store: Store;
  logger: Logger;
  cacheDir?: string;
  buildrootDir?: string;
  /** Where temporary build trees go (the work layout's lua dir). */
  workDir: string;
  fetch?: FetchOptions;
  signal?: AbortSignal;
}

export interface LuaBuildResult {
  /** The cached binary; copy it, do not modify it. */
  path: string;
  bytes: number;
  sha256: string;
  cached: boolean;
  seconds: number;
  /** Cache key: sha256 of the build's inputs. */
  key: string;
  version: string;
  arch: LuaArch;
  strategy: LuaStrategy;
}

interface BuildMeta {
  version: string;
  arch: LuaArch;
  strategy: LuaStrategy;
  source: string;
  toolchain: string;
  flags: string[];
  sha256: string;
  bytes: number;
}

/** Bump when the way a binary is made changes in a way the inputs below do not capture. */
const RECIPE_VERSION = 1;

export function defaultLuaUrls(version: string): string[] {
  return [`https://www.lua.org/ftp/lua-${version}.tar.gz`];
}

/** Lua 5.3.x and 5.4.x: what the verification and the build flags are known to work with. */
export function checkLuaVersion(version: string): void {
  if (!/^5\.[34]\.\d+$/.test(version))
    throw new UserError(`unsupported Lua version "${version}": expected 5.3.x or 5.4.x`);
}

function jobs(): number {
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

interface Recipe {
  toolchain: string;
  flags: string[];
  /** Builds in srcDir (the unpacked tree) and returns the stripped binary's path. */
  build(srcDir: string): Promise<string>;
}

async function crossRecipe(arch: LuaArch, logger: Logger, signal?: AbortSignal): Promise<Recipe> {
  const tc = crossToolchain(arch);
  const missing = [tc.specs, tc.libc].filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new UserError(
      `the musl cross toolchain for ${arch} is incomplete (missing ${missing.join(', ')}); install: apt-get install ${tc.packages.join(' ')} (or run: lhc setup)`,
    );
  }
  const gccVersion = (await run([tc.gcc, '--version'], { logger })).stdout.split('\n')[0]!.trim();
  // musl is linked into the binary, so its exact bytes are part of the toolchain.
  const libcSha = await sha256File(tc.libc);
  const flags = crossMakeArgv(tc);
  return {
    toolchain: `${gccVersion}; musl libc.a sha256 ${libcSha}`,
    flags: flags.filter((a) => !a.startsWith('-j')),
    async build(srcDir) {
      await logger.group(`compile Lua (cross, ${arch}, musl)`, async () => {
        await run(crossMakeArgv(tc, jobs()), {
          cwd: srcDir,
          logger,
          timeoutMs: 20 * 60_000,
          signal,
          stderrLines: 30,
        });
      });
      const binary = path.join(srcDir, 'src', 'lua');
      await run([tc.strip, binary], { logger });
      return binary;
    },
  };
}

async function inRootRecipe(arch: LuaArch, opts: LuaBuildOptions, cache: string): Promise<Recipe> {
  const buildroot = await ensureBuildroot({
    dir: opts.buildrootDir ?? path.join(cache, 'buildroots'),
    arch,
    logger: opts.logger,
    signal: opts.signal,
  });
  const flags = inRootMakeArgv();
  return {
    toolchain: `buildroot ${buildroot.key}: ${buildroot.toolchain}`,
    flags: [...flags.filter((a) => !a.startsWith('-j')), 'strip'],
    build: (srcDir) =>
      compileInRoot(srcDir, buildroot, {
        logger: opts.logger,
        workDir: opts.workDir,
        jobs: jobs(),
        signal: opts.signal,
      }),
  };
}

/** The cached build for `dir`, when present and intact. */
async function readCached(dir: string, logger: Logger): Promise<BuildMeta | undefined> {
  const bin = path.join(dir, 'lua');
  const metaFile = path.join(dir, 'build.json');
  if (!existsSync(bin) || !existsSync(metaFile)) return undefined;
  try {
    const meta = JSON.parse(await readFile(metaFile, 'utf8')) as BuildMeta;
    if ((await sha256File(bin)) === meta.sha256) return meta;
    logger.warn(`cached Lua in ${dir} does not match its recorded sha256; rebuilding`);
  } catch (e) {
    logger.warn(`cached Lua in ${dir} is unreadable (${(e as Error).message}); rebuilding`);
  }
  await rm(dir, { recursive: true, force: true });
  return undefined;
}

export async function buildLua(ctx: StageContext, input: LuaBuildInput): Promise<LuaBuildResult> {
  const { cacheDir, buildrootDir, fetch, ...spec } = input;
  const opts: LuaBuildOptions = {
    store: ctx.store,
    logger: ctx.logger,
    cacheDir,
    buildrootDir,
    workDir: ctx.work.lua,
    fetch,
    signal: ctx.signal,
  };
  const started = Date.now();
  checkLuaVersion(spec.version);
  const { logger } = opts;
  const cache = opts.cacheDir ?? defaultCacheDir();
  const recipe =
    spec.strategy === 'cross'
      ? await crossRecipe(spec.arch, logger, opts.signal)
      : await inRootRecipe(spec.arch, opts, cache);
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        recipe: RECIPE_VERSION,
        source: spec.sha256,
        version: spec.version,
        arch: spec.arch,
        strategy: spec.strategy,
        toolchain: recipe.toolchain,
        flags: recipe.flags,
      }),
    )
    .digest('hex');
  const dir = path.join(cache, 'lua', key);
  const result = (meta: { sha256: string; bytes: number }, cached: boolean): LuaBuildResult => ({
    path: path.join(dir, 'lua'),
    bytes: meta.bytes,
    sha256: meta.sha256,
    cached,
    seconds: (Date.now() - started) / 1000,
    key,
    version: spec.version,
    arch: spec.arch,
    strategy: spec.strategy,
  });

  const hit = await readCached(dir, logger);
  if (hit) {
    logger.info(`Lua ${spec.version} (${spec.arch}, ${spec.strategy}): cached, ${hit.bytes} bytes`);
    return result(hit, true);
  }

  const tarball = await opts.store.fetch(
    {
      urls: spec.urls ?? defaultLuaUrls(spec.version),
      sha256: spec.sha256,
      name: `lua-${spec.version}.tar.gz`,
    },
    { ...opts.fetch, signal: opts.signal },
  );
  await mkdir(opts.workDir, { recursive: true });
  const work = await mkdtemp(path.join(opts.workDir, 'lhc-lua-'));
  try {
    const srcParent = path.join(work, 'src');
    await mkdir(srcParent);
    const srcDir = await extractLuaSource(tarball, srcParent, spec.version);
    const built = await recipe.build(srcDir);
    await verifyLua(built, { version: spec.version, arch: spec.arch, logger });

    const staging = path.join(
      cache,
      'lua',
      `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`,
    );
    await mkdir(staging, { recursive: true });
    try {
      const bin = path.join(staging, 'lua');
      await copyFile(built, bin);
      await chmod(bin, 0o755);
      const meta: BuildMeta = {
        version: spec.version,
        arch: spec.arch,
        strategy: spec.strategy,
        source: spec.sha256,
        toolchain: recipe.toolchain,
        flags: recipe.flags,
        sha256: await sha256File(bin),
        bytes: (await stat(bin)).size,
      };
      await writeFile(path.join(staging, 'build.json'), `${JSON.stringify(meta, null, 2)}\n`);
      try {
        await rename(staging, dir);
      } catch (e) {
        // Another build of the same key finished first: its result is equivalent, keep it.
        if (!existsSync(path.join(dir, 'lua'))) throw e;
      }
      logger.info(
        `Lua ${spec.version} (${spec.arch}, ${spec.strategy}): built, ${meta.bytes} bytes, sha256 ${meta.sha256}`,
      );
      const final = (await readCached(dir, logger)) ?? meta;
      return result(final, false);
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
