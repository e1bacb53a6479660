/**
 * Pack stage: seconds to pack a gophermoon-shaped root (the example's content and script, the
 * real static aarch64 Lua from the Lua stage at /bin/lua), the image bytes (budget 150 KB) and
 * the data template bytes. The Lua binary is built with a cold cache in the section's work dir.
 */
import { copyFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { packImage } from '../../src/stages/pack.js';
import { buildLua } from '../../src/stages/lua.js';
import { Store } from '../../src/store/store.js';
import { luaSourceTarball } from '../support/debian-inputs.js';
import { gophermoonLikeRoot, IMAGE_BUDGET_BYTES, sampleDataDir } from '../support/pack-fixtures.js';
import { timed, type BenchSection } from './section.js';

export const packSection: BenchSection = {
  name: 'pack',
  async run(ctx) {
    const logger = memoryLogger();
    const src = await luaSourceTarball('5.4.4');
    const store = new Store(path.join(ctx.workDir, 'store'), logger);
    await store.add(src.path);
    ctx.log('building static aarch64 Lua for the root');
    const stage = stageContext({
      logger,
      store,
      workDir: ctx.workDir,
      outDir: path.join(ctx.workDir, 'out'),
    });
    const lua = await buildLua(stage, {
      version: '5.4.4',
      sha256: src.sha256,
      arch: 'aarch64',
      strategy: 'cross',
      cacheDir: path.join(ctx.workDir, 'cache'),
    });
    const root = await gophermoonLikeRoot(path.join(ctx.workDir, 'root'));
    await copyFile(lua.path, path.join(root, 'bin/lua'));
    await chmod(path.join(root, 'bin/lua'), 0o755);
    const data = await sampleDataDir(path.join(ctx.workDir, 'data'));
    ctx.log('packing');
    const { seconds, result } = await timed(() =>
      packImage(stage, { root, dataDir: data, name: 'gophermoon', epoch: 1_700_000_000 }),
    );
    if (result.imageBytes > IMAGE_BUDGET_BYTES)
      ctx.log(`image ${result.imageBytes} bytes is over the ${IMAGE_BUDGET_BYTES}-byte budget`);
    return [
      { metric: 'pack seconds', value: seconds, unit: 's' },
      { metric: 'image bytes', value: result.imageBytes, unit: 'bytes' },
      { metric: 'data template bytes', value: result.dataTemplateBytes, unit: 'bytes' },
      { metric: 'image paths', value: result.manifestData.image.length, unit: 'count' },
    ];
  },
};
