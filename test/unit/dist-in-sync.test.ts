import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/tools/exec.js';

const repo = path.resolve(import.meta.dirname, '../..');

it('dist/ is what `npm run bundle` builds from src/ (run: npm run bundle)', async () => {
  const r = await run([process.execPath, '.config/bundle.mjs', '--check'], {
    cwd: repo,
    reject: false,
    timeoutMs: 120_000,
  });
  expect(r.stderr + r.stdout).toContain('dist/ matches src/');
  expect(r.exitCode).toBe(0);
});

describe('the bundles run without node_modules', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-dist-'));
    await copyFile(path.join(repo, 'dist/cli.js'), path.join(dir, 'cli.js'));
    await copyFile(path.join(repo, 'dist/index.js'), path.join(dir, 'index.js'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('dist/cli.js validates a config: exit 0, and exit 2 for a bad sha256', async () => {
    const config = (sha: string) =>
      `name: t\nlua:\n  version: "5.4.4"\n  sha256: ${sha}\nservice:\n  command: [/bin/lua]\n  inetd: true\nprobes:\n  - name: root\n    type: gopher\n    fixture: root.gopher\n`;
    await writeFile(path.join(dir, 'good.yml'), config('a'.repeat(64)));
    // validate also checks that the files a config names are there.
    await writeFile(path.join(dir, 'root.gopher'), '.\r\n');
    await writeFile(path.join(dir, 'lhc.yml'), config('a'.repeat(63)));
    const good = await run([process.execPath, 'cli.js', 'validate', 'good.yml'], {
      cwd: dir,
      reject: false,
    });
    expect(good.stdout).toBe('good.yml: ok (t, aarch64, base scratch, lua 5.4.4, 1 probe)\n');
    expect(good.exitCode).toBe(0);
    const bad = await run([process.execPath, 'cli.js', 'validate', 'lhc.yml'], {
      cwd: dir,
      reject: false,
    });
    expect(bad.stderr).toBe('error: lua.sha256: expected 64 hex characters (lhc.yml:4)\n');
    expect(bad.exitCode).toBe(2);
  });

  it('dist/index.js reports a config error through the runner protocol, without a stack', async () => {
    const r = await run([process.execPath, 'index.js'], {
      cwd: dir,
      reject: false,
      env: { INPUT_CONFIG: 'missing.yml', GITHUB_OUTPUT: '', GITHUB_STEP_SUMMARY: '' },
    });
    expect(r.stdout).toBe('::error::cannot read config missing.yml: ENOENT\n');
    expect(r.exitCode).toBe(1);
  });
});
