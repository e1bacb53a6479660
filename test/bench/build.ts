/**
 * Build: the wall time of `lhc build` for gophermoon as a user runs it (the bundled CLI, its own
 * cache dir), cold (Lua compiled) and warm (everything cached: what CI pays on every push).
 *
 * With LHC_BENCH_BASELINE=<commit>, that commit's bundled CLI (dist/cli.js, checked out into a
 * scratch dir) builds the same checkout too, its warm builds alternating with this tree's so both
 * see the same machine load; the ratio is this tree's over the baseline's.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../src/tools/exec.js';
import { luaSourceTarball } from '../support/debian-inputs.js';
import { REPO, copyGophermoonCheckout } from '../support/gopher.js';
import { timed, type BenchContext, type BenchSection, type Measurement } from './section.js';

const WARM_ROUNDS = 3;

/** The baseline commit's dist/cli.js, written under dir (dist/ is a self-contained bundle). */
function baselineCli(commit: string, dir: string): string {
  const file = path.join(dir, 'dist/cli.js');
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, execFileSync('git', ['-C', REPO, 'show', `${commit}:dist/cli.js`]));
  writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n');
  return file;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export const buildSection: BenchSection = {
  name: 'build',
  async run(ctx: BenchContext) {
    const config = copyGophermoonCheckout(path.join(ctx.workDir, 'src'));
    const env = { LHC_CACHE_DIR: path.join(ctx.workDir, 'cache'), SOURCE_DATE_EPOCH: '1700000000' };
    const baseline = process.env['LHC_BENCH_BASELINE'];
    const clis: Record<string, string> = { current: path.join(REPO, 'dist/cli.js') };
    if (baseline) clis['baseline'] = baselineCli(baseline, path.join(ctx.workDir, 'baseline'));
    const cli = (which: string, argv: string[]) =>
      run([process.execPath, clis[which]!, ...argv], { env, timeoutMs: 30 * 60_000 });
    // lua.org may be out of reach: the same tarball from Debian's source package.
    await cli('current', ['store', 'add', (await luaSourceTarball('5.4.4')).path]);
    let n = 0;
    const build = (which: string) => {
      n++;
      return timed(() =>
        cli(which, [
          'build',
          config,
          '--quiet',
          '--out',
          path.join(ctx.workDir, `out${n}`),
          '--work-dir',
          path.join(ctx.workDir, `work${n}`),
        ]),
      );
    };
    ctx.log('cold build (compiles Lua)');
    const cold = await build('current');
    const warm: Record<string, number[]> = { current: [], baseline: [] };
    if (baseline) {
      ctx.log(`baseline ${baseline}: one build to warm its own cache entries`);
      await build('baseline');
    }
    for (let i = 0; i < WARM_ROUNDS; i++) {
      for (const which of Object.keys(clis)) {
        ctx.log(`warm build ${i + 1}/${WARM_ROUNDS} (${which})`);
        warm[which]!.push((await build(which)).seconds);
      }
    }
    const out: Measurement[] = [
      { metric: 'gophermoon cold build', value: cold.seconds, unit: 's' },
      { metric: 'gophermoon warm build', value: median(warm['current']!), unit: 's' },
    ];
    if (baseline) {
      const b = median(warm['baseline']!);
      out.push(
        { metric: `gophermoon warm build, baseline ${baseline.slice(0, 7)}`, value: b, unit: 's' },
        {
          metric: 'gophermoon warm build current/baseline ratio',
          value: Math.round((median(warm['current']!) / b) * 100) / 100,
          unit: 'x',
        },
      );
    }
    return out;
  },
};
