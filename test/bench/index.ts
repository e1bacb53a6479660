/**
 * The benchmark runner: `npm run bench [-- SECTION...]`. Each section measures one stage for
 * real and returns numbers; results go to stdout as "section  metric  value unit" lines (and
 * as JSON with --json FILE), progress to stderr. Add a section by adding one line to SECTIONS.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { boardSection } from './board.js';
import { buildSection } from './build.js';
import { luaSection } from './lua.js';
import { nspawnSection } from './nspawn.js';
import { packSection } from './pack.js';
import { traceSection } from './trace.js';
import { verifySection } from './verify.js';
import type { BenchSection, Measurement } from './section.js';

const SECTIONS: BenchSection[] = [
  luaSection,
  packSection,
  traceSection,
  verifySection,
  buildSection,
  boardSection,
  nspawnSection,
];

function formatValue(m: Measurement): string {
  return m.unit === 's' ? m.value.toFixed(2) : String(m.value);
}

async function mainBench(argv: string[]): Promise<number> {
  let json: string | undefined;
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--json') json = argv[++i];
    else names.push(argv[i]!);
  }
  const unknown = names.filter((n) => !SECTIONS.some((s) => s.name === n));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown section(s): ${unknown.join(', ')}; sections: ${SECTIONS.map((s) => s.name).join(', ')}\n`,
    );
    return 2;
  }
  const chosen = names.length > 0 ? SECTIONS.filter((s) => names.includes(s.name)) : SECTIONS;
  const results: Record<string, Measurement[]> = {};
  let failed = false;
  for (const section of chosen) {
    const workDir = await mkdtemp(path.join(os.tmpdir(), `lhc-bench-${section.name}-`));
    try {
      process.stderr.write(`==> bench ${section.name}\n`);
      const ms = await section.run({ workDir, log: (l) => void process.stderr.write(`  ${l}\n`) });
      results[section.name] = ms;
      // A metric that already names its section (e.g. "board bare p50") is printed as it is.
      const label = (m: Measurement) =>
        m.metric.startsWith(`${section.name} `) ? m.metric : `${section.name}  ${m.metric}`;
      const width = Math.max(...ms.map((m) => label(m).length));
      for (const m of ms)
        process.stdout.write(`${label(m).padEnd(width)}  ${formatValue(m)} ${m.unit}\n`);
    } catch (e) {
      failed = true;
      process.stderr.write(
        `bench ${section.name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
      );
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  }
  if (json) await writeFile(json, `${JSON.stringify(results, null, 2)}\n`);
  return failed ? 1 : 0;
}

process.exitCode = await mainBench(process.argv.slice(2));
