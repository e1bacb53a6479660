/**
 * The workflows in .github/workflows are only run by GitHub, so check here what would otherwise
 * fail there first: YAML syntax, the basic shape, and that every `uses: ./` step passes only
 * inputs action.yml declares and reads only outputs it declares, on configs that exist.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, parseDocument } from 'yaml';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = path.join(repo, '.github/workflows');
const EXPECTED = ['build.yml', 'check-dist.yml', 'manifest.yml', 'release.yml'];

interface Step {
  id?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, unknown>;
}
interface Job {
  'runs-on'?: unknown;
  steps?: Step[];
  strategy?: { matrix?: Record<string, unknown[]> };
}
interface Workflow {
  on?: unknown;
  jobs?: Record<string, Job>;
}

function load(file: string): Workflow {
  const text = readFileSync(path.join(dir, file), 'utf8');
  const doc = parseDocument(text, { uniqueKeys: true });
  expect(
    doc.errors.map((e) => e.message),
    `${file}: YAML errors`,
  ).toEqual([]);
  return doc.toJS() as Workflow;
}

function actionSpec(): { inputs: Set<string>; outputs: Set<string> } {
  const file = path.join(repo, 'action.yml');
  expect(existsSync(file), 'action.yml exists at the top level').toBe(true);
  const a = parse(readFileSync(file, 'utf8')) as {
    inputs?: Record<string, unknown>;
    outputs?: Record<string, unknown>;
  };
  return {
    inputs: new Set(Object.keys(a.inputs ?? {})),
    outputs: new Set(Object.keys(a.outputs ?? {})),
  };
}

/** Expands `${{ matrix.KEY }}` with every value of the job's matrix. */
function expand(value: string, matrix: Record<string, unknown[]> | undefined): string[] {
  let out = [value];
  for (const [key, values] of Object.entries(matrix ?? {})) {
    const re = new RegExp(`\\$\\{\\{\\s*matrix\\.${key}\\s*\\}\\}`, 'g');
    if (!re.test(value)) continue;
    out = out.flatMap((v) => values.map((x) => v.replace(re, String(x))));
  }
  return out;
}

const workflows = readdirSync(dir)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();

/**
 * Examples whose inputs only their integration test provides, so a workflow cannot build them
 * from a plain checkout.
 */
const BUILT_BY_TESTS_ONLY: Record<string, string> = {
  'alpine-apk':
    'its apk repository (served on 127.0.0.1) and the Alpine minirootfs come from test/integration/pipeline-alpine-apk.test.ts',
};

describe('workflows', () => {
  it('are all there', () => {
    expect(workflows).toEqual(expect.arrayContaining(EXPECTED));
  });

  it.each(workflows)('%s parses and has on, jobs, runs-on and steps', (file) => {
    const wf = load(file);
    expect(wf.on, `${file}: on`).toBeDefined();
    expect(Object.keys(wf.jobs ?? {}).length, `${file}: jobs`).toBeGreaterThan(0);
    for (const [name, job] of Object.entries(wf.jobs!)) {
      expect(job['runs-on'], `${file}: jobs.${name}.runs-on`).toBeDefined();
      expect(job.steps?.length, `${file}: jobs.${name}.steps`).toBeGreaterThan(0);
      for (const step of job.steps!)
        expect(!!step.uses !== !!step.run, `${file}: a step has exactly one of uses/run`).toBe(
          true,
        );
    }
  });

  it.each(workflows)(
    '%s uses the local action only with declared inputs, outputs and existing configs',
    (file) => {
      const wf = load(file);
      const local = Object.values(wf.jobs ?? {}).flatMap((job) =>
        (job.steps ?? []).filter((s) => s.uses === './').map((s) => ({ job, step: s })),
      );
      if (local.length === 0) return;
      const spec = actionSpec();
      for (const { job, step } of local) {
        for (const key of Object.keys(step.with ?? {})) {
          expect(
            spec.inputs.has(key),
            `${file}: input "${key}" is not declared in action.yml`,
          ).toBe(true);
        }
        const config = step.with?.config;
        expect(typeof config, `${file}: the local action gets a config`).toBe('string');
        for (const c of expand(config as string, job.strategy?.matrix)) {
          expect(existsSync(path.join(repo, c)), `${file}: config ${c} exists`).toBe(true);
        }
        if (step.id) {
          const text = JSON.stringify(job.steps);
          const re = new RegExp(`steps\\.${step.id}\\.outputs\\.([\\w-]+)`, 'g');
          for (const m of text.matchAll(re)) {
            expect(
              spec.outputs.has(m[1]!),
              `${file}: output "${m[1]}" is not declared in action.yml`,
            ).toBe(true);
          }
        }
      }
    },
  );

  it('build and release cover every example with a config', () => {
    const examples = readdirSync(path.join(repo, 'examples'), { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(path.join(repo, 'examples', d.name, 'lhc.yml')))
      .map((d) => d.name)
      .filter((name) => !(name in BUILT_BY_TESTS_ONLY))
      .sort();
    expect(examples.length).toBeGreaterThan(0);
    for (const file of ['build.yml', 'release.yml', 'manifest.yml']) {
      const matrices = Object.values(load(file).jobs ?? {})
        .map((j) => j.strategy?.matrix?.example)
        .filter((m): m is unknown[] => Array.isArray(m));
      expect(matrices.length, `${file}: a matrix over examples`).toBeGreaterThan(0);
      for (const m of matrices) expect([...m].map(String).sort(), file).toEqual(examples);
    }
  });
});
