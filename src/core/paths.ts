import os from 'node:os';
import path from 'node:path';

/** Root of lhc's caches: $LHC_CACHE_DIR, else $XDG_CACHE_HOME/lhc, else ~/.cache/lhc. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LHC_CACHE_DIR) return path.resolve(env.LHC_CACHE_DIR);
  const xdg = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(xdg, 'lhc');
}

/** The content-addressed download store: one file per sha256. */
export function storeDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(cacheDir(env), 'store');
}
