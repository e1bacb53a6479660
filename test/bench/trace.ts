/**
 * Trace and prune: for gophermoon (scratch + static Lua) and nginx (Debian arm64 base with
 * nginx-light), the unpruned root's bytes, the pruned root's bytes, their ratio, the seconds of
 * the traced run (all probes under QEMU_STRACE), of the prune and of the self-check replay.
 * The Lua binary and the Debian base come from the test cache (their cost is other sections').
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { buildLua } from '../../src/stages/lua.js';
import { pruneRoot } from '../../src/stages/prune.js';
import { assembleRoot } from '../../src/stages/root.js';
import { selfCheck } from '../../src/stages/self-check.js';
import { traceService } from '../../src/stages/trace.js';
import { Store } from '../../src/store/store.js';
import { LUA_SOURCES, luaSourceTarball, testCacheDir } from '../support/debian-inputs.js';
import { timed, type BenchContext, type BenchSection, type Measurement } from './section.js';

const REPO = path.resolve(import.meta.dirname, '../..');

async function measure(ctx: BenchContext, example: 'gophermoon' | 'nginx'): Promise<Measurement[]> {
  const logger = memoryLogger();
  const cfg = await loadConfig(path.join(REPO, 'examples', example, 'lhc.yml'));
  const work = path.join(ctx.workDir, example);
  const store = new Store(path.join(work, 'store'), logger);
  const stage = stageContext({ logger, workDir: work, store });
  let luaPath: string | undefined;
  if (cfg.lua) {
    const src = await luaSourceTarball('5.4.4');
    await store.add(src.path);
    luaPath = (
      await buildLua(stage, {
        version: '5.4.4',
        sha256: LUA_SOURCES['5.4.4'].sha256,
        arch: 'aarch64',
        strategy: 'cross',
        cacheDir: path.join(testCacheDir(), 'lhc-cache'),
      })
    ).path;
  }
  ctx.log(`${example}: assembling the root`);
  await mkdir(work, { recursive: true });
  const { root } = await assembleRoot(stage, {
    config: cfg,
    ...(luaPath ? { luaPath } : {}),
    basesDir: path.join(testCacheDir(), 'bases'),
  });
  ctx.log(`${example}: traced run`);
  const trace = await traceService(stage, { config: cfg, root });
  const pruned = await timed(() => pruneRoot(stage, { root, trace, config: cfg }));
  const { report } = pruned.result;
  ctx.log(`${example}: self-check`);
  const check = await selfCheck(stage, {
    config: cfg,
    prunedRoot: pruned.result.prunedRoot,
    unprunedResponses: trace.responses,
    dataDir: pruned.result.dataDir,
  });
  return [
    { metric: `${example} base bytes`, value: report.base.bytes, unit: 'bytes' },
    { metric: `${example} pruned bytes`, value: report.kept.bytes, unit: 'bytes' },
    {
      metric: `${example} pruned/base ratio`,
      value: Number((report.kept.bytes / report.base.bytes).toFixed(4)),
      unit: 'ratio',
    },
    { metric: `${example} kept entries`, value: report.kept.entries, unit: 'count' },
    {
      metric: `${example} trace seconds (${cfg.probes.length} probes)`,
      value: trace.seconds,
      unit: 's',
    },
    { metric: `${example} prune seconds`, value: pruned.seconds, unit: 's' },
    { metric: `${example} self-check seconds`, value: check.seconds, unit: 's' },
  ];
}

export const traceSection: BenchSection = {
  name: 'trace',
  async run(ctx) {
    return [...(await measure(ctx, 'gophermoon')), ...(await measure(ctx, 'nginx'))];
  },
};
