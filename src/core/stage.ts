/** What every stage of a build gets besides its own input. */
import { mkdtemp, rmdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../store/store.js';
import type { Logger } from './logger.js';
import { workLayout, type WorkLayout } from './work-layout.js';

export interface StageContext {
  logger: Logger;
  /** Aborted on SIGINT/SIGTERM (the shells own the controller); stages pass it to every process. */
  signal?: AbortSignal;
  store: Store;
  work: WorkLayout;
  /** Where the artifacts go. */
  outDir: string;
  env: NodeJS.ProcessEnv;
}

export interface StageContextOptions {
  logger: Logger;
  /** The work dir every intermediate path is derived from. */
  workDir: string;
  /** Default: the work dir (for callers that write no artifacts). */
  outDir?: string;
  /** Default: the user's store ($LHC_CACHE_DIR/store). */
  store?: Store;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

export function stageContext(o: StageContextOptions): StageContext {
  return {
    logger: o.logger,
    store: o.store ?? new Store(undefined, o.logger),
    work: workLayout(o.workDir),
    outDir: path.resolve(o.outDir ?? o.workDir),
    env: o.env ?? process.env,
    ...(o.signal ? { signal: o.signal } : {}),
  };
}

/**
 * Runs one stage outside a build (`lhc lua`, `lhc verify`) with a fresh temp work dir. Stages
 * remove what they create there; only the then-empty dirs are removed afterwards, never a tree
 * (a verify whose teardown failed may leave a mount in it).
 */
export async function withScratchContext<T>(
  o: Omit<StageContextOptions, 'workDir'>,
  fn: (ctx: StageContext) => Promise<T>,
): Promise<T> {
  const ctx = stageContext({ ...o, workDir: await mkdtemp(path.join(os.tmpdir(), 'lhc-')) });
  try {
    return await fn(ctx);
  } finally {
    for (const d of [ctx.work.lua, ctx.work.verify, ctx.work.dir])
      await rmdir(d).catch(() => undefined);
  }
}
