/**
 * Build: the wall time of `lhc build` for gophermoon as a user runs it (the bundled CLI, its own
 * cache dir), cold (Lua compiled) and warm (everything cached: what CI pays on every push).
 */
import path from 'node:path';
import { run } from '../../src/tools/exec.js';
import { luaSourceTarball } from '../support/debian-inputs.js';
import { REPO, copyGophermoonCheckout } from '../support/gopher.js';
import { timed, type BenchSection } from './section.js';

export const buildSection: BenchSection = {
  name: 'build',
  async run(ctx) {
    const config = copyGophermoonCheckout(path.join(ctx.workDir, 'src'));
    const env = { LHC_CACHE_DIR: path.join(ctx.workDir, 'cache'), SOURCE_DATE_EPOCH: '1700000000' };
    const cli = (argv: string[]) =>
      run([process.execPath, path.join(REPO, 'dist/cli.js'), ...argv], {
        env,
        timeoutMs: 30 * 60_000,
      });
    // lua.org may be out of reach: the same tarball from Debian's source package.
    await cli(['store', 'add', (await luaSourceTarball('5.4.4')).path]);
    const build = (n: number) =>
      timed(() =>
        cli([
          'build',
          config,
          '--quiet',
          '--out',
          path.join(ctx.workDir, `out${n}`),
          '--work-dir',
          path.join(ctx.workDir, `work${n}`),
        ]),
      );
    ctx.log('cold build (compiles Lua)');
    const cold = await build(1);
    ctx.log('warm builds');
    const warm = [await build(2), await build(3)].map((b) => b.seconds).sort((a, b) => a - b);
    return [
      { metric: 'gophermoon cold build', value: cold.seconds, unit: 's' },
      { metric: 'gophermoon warm build', value: warm[0]!, unit: 's' },
    ];
  },
};
