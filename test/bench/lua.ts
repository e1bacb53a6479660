/**
 * Lua stage: per strategy, a cold build (fresh cache, source seeded into the store), a warm
 * build (cache hit, in process), a warm `lhc lua` run as its own process (what a user waits
 * for), and the binary's size. The in-root build root is cached across runs in
 * $LHC_TEST_CACHE/buildroots; when it has to be made, that time is reported separately.
 * LHC_BENCH_LUA_STRATEGIES=cross limits the strategies (default: cross,in-root).
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, symlink } from 'node:fs/promises';
import path from 'node:path';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { buildLua, type LuaStrategy } from '../../src/stages/lua.js';
import { Store } from '../../src/store/store.js';
import { run } from '../../src/tools/exec.js';
import { luaSourceTarball, testCacheDir } from '../support/debian-inputs.js';
import { timed, type BenchSection, type Measurement } from './section.js';

const VERSION = '5.4.4';

export const luaSection: BenchSection = {
  name: 'lua',
  async run(ctx) {
    const strategies = (process.env.LHC_BENCH_LUA_STRATEGIES ?? 'cross,in-root').split(
      ',',
    ) as LuaStrategy[];
    const src = await luaSourceTarball(VERSION);
    const buildrootDir = path.join(testCacheDir(), 'buildroots');
    const out: Measurement[] = [];
    for (const strategy of strategies) {
      const cacheDir = path.join(ctx.workDir, strategy);
      const logger = memoryLogger();
      const store = new Store(path.join(cacheDir, 'store'), logger);
      // The CLI run below finds build roots under its LHC_CACHE_DIR: share the cached one.
      await mkdir(buildrootDir, { recursive: true });
      await mkdir(cacheDir, { recursive: true });
      await symlink(buildrootDir, path.join(cacheDir, 'buildroots'));
      await store.add(src.path);
      const spec = { version: VERSION, sha256: src.sha256, arch: 'aarch64' as const, strategy };
      const rootsBefore = existsSync(buildrootDir) ? (await readdir(buildrootDir)).length : 0;
      ctx.log(`${strategy}: cold build of Lua ${VERSION}`);
      const cold = await timed(() =>
        buildLua(stageContext({ logger, store, workDir: ctx.workDir }), {
          ...spec,
          cacheDir,
          buildrootDir,
        }),
      );
      const madeRoot = strategy === 'in-root' && (await readdir(buildrootDir)).length > rootsBefore;
      const rootGroup = logger.lines.find((l) => l.startsWith('==> build root: mmdebstrap'));
      ctx.log(`${strategy}: warm build`);
      const warm = await timed(() =>
        buildLua(stageContext({ logger, store, workDir: ctx.workDir }), {
          ...spec,
          cacheDir,
          buildrootDir,
        }),
      );
      if (!warm.result.cached || warm.result.sha256 !== cold.result.sha256)
        throw new Error(`${strategy}: warm build was not a cache hit`);
      const cli = existsSync('dist/cli.js')
        ? ['node', 'dist/cli.js']
        : ['npx', 'tsx', 'src/cli-entry.ts'];
      const proc = await timed(() =>
        run(
          [
            ...cli,
            'lua',
            '--version',
            VERSION,
            '--sha256',
            src.sha256,
            '--strategy',
            strategy,
            '--out',
            path.join(ctx.workDir, 'out'),
          ],
          {
            env: { LHC_CACHE_DIR: cacheDir },
          },
        ),
      );
      out.push(
        {
          metric: `${strategy} cold build${strategy === 'in-root' ? (madeRoot ? ' (incl. making the build root)' : ' (build root cached)') : ''}`,
          value: cold.seconds,
          unit: 's',
        },
        { metric: `${strategy} warm build (in process)`, value: warm.seconds, unit: 's' },
        {
          metric: `${strategy} warm lhc lua (${cli.slice(0, 2).join(' ')})`,
          value: proc.seconds,
          unit: 's',
        },
        { metric: `${strategy} binary size`, value: cold.result.bytes, unit: 'bytes' },
      );
      if (madeRoot && rootGroup) ctx.log(`${strategy}: the build root was made during this run`);
    }
    return out;
  },
};
