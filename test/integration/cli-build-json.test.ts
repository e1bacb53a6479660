/**
 * The "done when": in a directory holding lhc.yml, `lhc build --json` needs no argument
 * and prints one JSON object on stdout (logs on stderr) that describes the files it wrote.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { seededBuildCache } from '../support/debian-inputs.js';
import { copyGophermoonCheckout } from '../support/gopher.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const TSX = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;
const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

let tmp: string | undefined;
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function lhc(args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(
      process.execPath,
      ['--import', TSX, path.join(REPO, 'src/cli-entry.ts'), ...args],
      {
        cwd,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('cd examples/gophermoon && lhc build --json', () => {
  it('builds with no CONFIG argument and prints JSON describing the outputs', async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-build-json-'));
    // A copy, so the build's out/ lands outside the checkout; the fixtures keep their relative path.
    copyGophermoonCheckout(tmp);
    const { cacheDir } = await seededBuildCache();
    const cwd = path.join(tmp, 'examples/gophermoon');
    const r = await lhc(['build', '--json'], cwd, { ...process.env, LHC_CACHE_DIR: cacheDir });
    expect(r.code, r.stderr).toBe(0);
    // stdout is exactly one JSON object: the logs went to stderr.
    const j = JSON.parse(r.stdout) as {
      ok: boolean;
      name: string;
      outDir: string;
      image: { path: string; sha256: string; bytes: number };
      dataTemplate: { path: string; sha256: string };
      manifest: string;
      sha256sums: string;
      filesKept: number;
      bytesBefore: number;
      bytesAfter: number;
      verify: { ok: boolean; probes: { name: string; ok: boolean }[] } | null;
      timings: { stage: string; seconds: number }[];
    };
    expect(r.stderr).toMatch(/==> /);
    expect(j.ok).toBe(true);
    expect(j.name).toBe('gophermoon');
    expect(j.outDir).toBe(path.join(cwd, 'out'));
    expect(j.image.sha256).toBe(sha256(j.image.path));
    expect(j.image.bytes).toBe(statSync(j.image.path).size);
    expect(j.dataTemplate.sha256).toBe(sha256(j.dataTemplate.path));
    expect(path.dirname(j.manifest)).toBe(j.outDir);
    expect(readFileSync(j.sha256sums, 'utf8')).toContain(j.image.sha256);
    // The example keeps all of /gopher on a scratch base: pruning may remove nothing.
    expect(j.bytesAfter).toBeGreaterThan(0);
    expect(j.bytesAfter).toBeLessThanOrEqual(j.bytesBefore);
    expect(j.filesKept).toBeGreaterThan(0);
    expect(j.verify?.ok).toBe(true);
    expect(j.verify?.probes.length).toBeGreaterThan(0);
    expect(j.timings.map((t) => t.stage)).toContain('verify');
  });

  it('a stale lock: exit 1 after verify with the diff and --update-manifest named, no SHA256SUMS; then --update-manifest rewrites it and the passing rebuild removes the failure report', async () => {
    // Runs after the build above, in the same checkout and out/ (which holds its SHA256SUMS).
    expect(tmp, 'the first build ran').toBeDefined();
    const { cacheDir } = await seededBuildCache();
    const cwd = path.join(tmp!, 'examples/gophermoon');
    const env = { ...process.env, LHC_CACHE_DIR: cacheDir };
    expect(existsSync(path.join(cwd, 'out/SHA256SUMS'))).toBe(true);
    const lockFile = path.join(cwd, 'stale.lock.json');
    const committed = JSON.parse(readFileSync(path.join(cwd, 'manifest.lock.json'), 'utf8')) as {
      image: { path: string }[];
    };
    committed.image = committed.image.filter((e) => e.path !== '/bin/gophermoon');
    await writeFile(lockFile, JSON.stringify(committed, null, 2) + '\n');

    const failed = await lhc(['build', '--json', '--manifest-lock', 'stale.lock.json'], cwd, env);
    expect(failed.code, failed.stderr).toBe(1);
    const j = JSON.parse(failed.stdout) as {
      ok: boolean;
      sha256sums: string | null;
      failureReport: string | null;
      manifestDiff: string | null;
      manifestUpdated: boolean;
      verify: { ok: boolean } | null;
    };
    expect(j).toMatchObject({ ok: false, sha256sums: null, manifestUpdated: false });
    expect(j.verify?.ok, 'verify ran and passed').toBe(true);
    expect(j.manifestDiff).toContain('+ image /bin/gophermoon');
    expect(failed.stderr).toContain('+ image /bin/gophermoon');
    expect(failed.stderr).toContain('rebuild with --update-manifest');
    expect(existsSync(path.join(cwd, 'out/SHA256SUMS'))).toBe(false);
    expect(j.failureReport).toBe(path.join(cwd, 'out/gophermoon.build-failed.txt'));
    expect(readFileSync(j.failureReport!, 'utf8')).toContain('+ image /bin/gophermoon');

    const updated = await lhc(
      ['build', '--manifest-lock', 'stale.lock.json', '--update-manifest'],
      cwd,
      env,
    );
    expect(updated.code, updated.stderr).toBe(0);
    expect(updated.stdout).toContain('manifest lock stale.lock.json updated');
    expect(updated.stderr).toContain('removed gophermoon.build-failed.txt');
    expect(existsSync(j.failureReport!)).toBe(false);
    expect(readFileSync(path.join(cwd, 'out/SHA256SUMS'), 'utf8')).toContain('gophermoon.squashfs');
    expect(readFileSync(lockFile, 'utf8')).toContain('"/bin/gophermoon"');
  });
});
