import path from 'node:path';
import { expect, it } from 'vitest';
import { run } from '../../src/tools/exec.js';

const repo = path.resolve(import.meta.dirname, '../..');
const bin = (tool: string) => path.join(repo, 'node_modules/.bin', tool);

it('typecheck: tsc -p tsconfig.json has no errors', async () => {
  const r = await run([bin('tsc'), '-p', 'tsconfig.json'], {
    cwd: repo,
    reject: false,
    timeoutMs: 300_000,
  });
  expect(r.stdout + r.stderr).toBe('');
  expect(r.exitCode).toBe(0);
});

it('lint: eslint src test has no problems', async () => {
  const r = await run([bin('eslint'), '-c', '.config/eslint.config.js', 'src', 'test'], {
    cwd: repo,
    reject: false,
    timeoutMs: 300_000,
  });
  expect(r.stdout + r.stderr).toBe('');
  expect(r.exitCode).toBe(0);
});
