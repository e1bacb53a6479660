/**
 * Carries the download store, the built Lua, the Debian base and the simulated board's root
 * between workflow runs with the Actions cache service. The cache only saves time: every failure is a warning and the build goes on, and
 * where there is no cache service (a local run, GHES without cache) it is skipped quietly.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import * as cache from '@actions/cache';
import { BOARD_PACKAGES, BOARD_SUITE } from '../board/root.js';
import type { LhcConfig } from '../config/load.js';
import type { Logger } from '../core/logger.js';
import { cacheDir, storeDir } from '../core/paths.js';

/** Bump when the layout of what is cached changes, so old entries are never restored. */
const KEY_VERSION = 'v1';

/** One directory to carry between runs and the key it is stored under. */
export interface CacheEntry {
  key: string;
  path: string;
}

/** What to cache for one build; an entry is absent when there is nothing of its kind. */
export interface CachePlan {
  /** The download store; absent when the config declares no remote input. */
  store?: CacheEntry;
  /** The built Lua directory (cacheDir()/lua/<luaKey>); absent when there is no Lua. */
  lua?: CacheEntry;
  /** The Debian base tarballs (cacheDir()/bases); absent unless `base.type: debian`. */
  bases?: CacheEntry;
  /** The simulated board's root (cacheDir()/board); absent unless the board verify runs on lhc's own root. */
  board?: CacheEntry;
}

export type CacheKind = keyof CachePlan;
const KINDS: readonly CacheKind[] = ['store', 'lua', 'bases', 'board'];

export interface CacheOutcome extends CacheEntry {
  /** The key that was restored (a hit), undefined on a miss or a failure. */
  restored?: string;
}

export type CacheReport = {
  /** False when there is no cache service or caching was turned off. */
  enabled: boolean;
} & { [K in CacheKind]?: CacheOutcome };

/** The sha256 of every remote input the config declares, sorted: what the store will hold. */
export function inputDigests(config: LhcConfig): string[] {
  const digests = new Set<string>();
  if (config.lua) digests.add(config.lua.sha256);
  if (config.base.type === 'tarball' && config.base.sha256) digests.add(config.base.sha256);
  return [...digests].sort();
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Keys and directories for a config.
 *
 * The store is keyed by the digests of the inputs it will hold. Built Lua is keyed by what the
 * action knows before building: the source digest, version, strategy, target arch and the
 * runner image (ImageOS/ImageVersion pin the toolchain on GitHub-hosted runners). The whole
 * cacheDir()/lua is carried, so the Lua stage still finds its exact entry by its own key (which
 * includes the toolchain version) and rebuilds when the toolchain differs. A caller that knows
 * the stage's exact key can pass `luaKey` to carry only that entry.
 *
 * The runner's OS and CPU are part of every key: tar archives of absolute paths and native
 * toolchains are not worth sharing across runner kinds.
 */
export function cachePlan(
  config: LhcConfig,
  opts: {
    luaKey?: string;
    env?: NodeJS.ProcessEnv;
    platform?: string;
    arch?: string;
    /** The board verify will run (the action's `board` input). */
    board?: boolean;
  } = {},
): CachePlan {
  const env = opts.env ?? process.env;
  const tag = `${opts.platform ?? process.platform}-${opts.arch ?? process.arch}`;
  const digests = inputDigests(config);
  const plan: CachePlan = {};
  if (digests.length > 0) {
    plan.store = {
      key: `lhc-store-${KEY_VERSION}-${tag}-${sha256(digests.join('\n'))}`,
      path: storeDir(env),
    };
  }
  const luaDir = path.join(cacheDir(env), 'lua');
  if (opts.luaKey) {
    plan.lua = {
      key: `lhc-lua-${KEY_VERSION}-${tag}-${opts.luaKey}`,
      path: path.join(luaDir, opts.luaKey),
    };
  } else if (config.lua) {
    const { sha256: source, version, strategy } = config.lua;
    const what = JSON.stringify({
      source,
      version,
      strategy,
      arch: config.arch,
      image: [env.ImageOS ?? '', env.ImageVersion ?? ''],
    });
    plan.lua = { key: `lhc-lua-${KEY_VERSION}-${tag}-${sha256(what)}`, path: luaDir };
  }
  // Bases are made by mmdebstrap from the runner's apt sources, so the runner image is part of
  // the key; the directory holds each base under its own input digest, so a stale entry is
  // never used, only rebuilt.
  const image = [env.ImageOS ?? '', env.ImageVersion ?? ''];
  if (config.base.type === 'debian') {
    const { suite, variant, packages } = config.base;
    const what = JSON.stringify({
      suite,
      variant,
      packages: [...packages].sort(),
      arch: config.arch,
      image,
    });
    plan.bases = {
      key: `lhc-bases-${KEY_VERSION}-${tag}-${sha256(what)}`,
      path: path.join(cacheDir(env), 'bases'),
    };
  }
  if (opts.board && !config.board) {
    const what = JSON.stringify({ suite: BOARD_SUITE, packages: BOARD_PACKAGES, image });
    plan.board = {
      key: `lhc-board-${KEY_VERSION}-${tag}-${sha256(what)}`,
      path: path.join(cacheDir(env), 'board'),
    };
  }
  return plan;
}

/**
 * True when this process can reach the Actions cache service. isFeatureAvailable() checks the
 * service URL for the protocol in use (v1: ACTIONS_CACHE_URL, v2: ACTIONS_RESULTS_URL); the
 * runtime token is needed by both, and its absence would otherwise surface as an auth error.
 */
export function cacheServiceAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.ACTIONS_RUNTIME_TOKEN && cache.isFeatureAvailable();
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The calls this module makes, injectable so tests can drive both outcomes without a service. */
export interface CacheBackend {
  available(): boolean;
  restore(paths: string[], key: string): Promise<string | undefined>;
  save(paths: string[], key: string): Promise<number>;
}

export const actionsCacheBackend: CacheBackend = {
  available: () => cacheServiceAvailable(),
  restore: (paths, key) => cache.restoreCache(paths, key),
  save: (paths, key) => cache.saveCache(paths, key),
};

export interface CacheOptions {
  /** Turn caching off (the action's `cache: false`). */
  enabled?: boolean;
  backend?: CacheBackend;
}

/**
 * Restores what exists for `keys`; never throws. The report is what saveCaches needs to skip
 * entries that were hits (an exact key can be saved only once).
 */
export async function restoreCaches(
  plan: CachePlan,
  logger: Logger,
  opts: CacheOptions = {},
): Promise<CacheReport> {
  const backend = opts.backend ?? actionsCacheBackend;
  if (opts.enabled === false) {
    logger.debug('cache: turned off by input');
    return { enabled: false };
  }
  if (!backend.available()) {
    logger.debug('cache: no Actions cache service here (local run?), skipping restore and save');
    return { enabled: false };
  }
  const report: CacheReport = { enabled: true };
  for (const which of KINDS) {
    const entry = plan[which];
    if (!entry) continue;
    const { key } = entry;
    const outcome: CacheOutcome = { ...entry };
    try {
      outcome.restored = await backend.restore([entry.path], key);
      logger.info(
        outcome.restored
          ? `cache: restored ${which} (${key})`
          : `cache: no ${which} entry for ${key}`,
      );
    } catch (e) {
      logger.warn(`cache: could not restore ${which} (${key}): ${message(e)}; building without it`);
    }
    report[which] = outcome;
  }
  return report;
}

/** Saves every entry that was a miss and now exists on disk; never throws. */
export async function saveCaches(
  report: CacheReport,
  logger: Logger,
  opts: Pick<CacheOptions, 'backend'> = {},
): Promise<void> {
  if (!report.enabled) return;
  const backend = opts.backend ?? actionsCacheBackend;
  for (const which of KINDS) {
    const outcome = report[which];
    if (!outcome) continue;
    if (outcome.restored === outcome.key) {
      logger.debug(`cache: ${which} was an exact hit, nothing to save`);
      continue;
    }
    if (!existsSync(outcome.path)) {
      logger.debug(`cache: ${which} directory ${outcome.path} does not exist, nothing to save`);
      continue;
    }
    try {
      const id = await backend.save([outcome.path], outcome.key);
      // saveCache returns -1 when it logged a non-fatal failure itself.
      if (id !== -1) logger.info(`cache: saved ${which} (${outcome.key})`);
    } catch (e) {
      logger.warn(`cache: could not save ${which} (${outcome.key}): ${message(e)}`);
    }
  }
}
