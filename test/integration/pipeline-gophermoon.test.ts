/**
 * The whole pipeline on the gophermoon example, as `lhc build` runs it: two builds from copies of
 * the example in different directories, with different umask, TZ and input mtimes, must give the
 * same bytes; the image stays within its budget, holds only what the service needs, and matches
 * the committed manifest lock; changing one content file makes `lhc diff` report exactly it.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { ACCEPT_PATH, needsAcceptLoop } from '../../src/accept/accept-elf.js';
import { memoryLogger } from '../../src/core/logger.js';
import { diffManifests, readManifest } from '../../src/manifest/diff.js';
import { build } from '../../src/pipeline.js';
import { run } from '../../src/tools/exec.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { GOPHERMOON_DIR, copyGophermoonCheckout } from '../support/gopher.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const EPOCH = '1700000000';
const ARTIFACTS = ['gophermoon.squashfs', 'gophermoon-data.tar.gz', 'gophermoon.manifest.json'];

const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

/** Copies the example (and the fixtures its probes name) so relative paths keep working. */
function copyExample(dest: string, touchTo?: Date): string {
  const config = copyGophermoonCheckout(dest);
  if (touchTo) {
    const walk = (d: string) => {
      for (const n of readdirSync(d)) {
        const p = path.join(d, n);
        if (statSync(p).isDirectory()) walk(p);
        utimesSync(p, touchTo, touchTo);
      }
    };
    walk(dest);
  }
  return config;
}

async function buildIn(
  configFile: string,
  outDir: string,
  env: { umask: number; tz: string },
): Promise<BuildResult> {
  const oldUmask = process.umask(env.umask);
  const oldTz = process.env.TZ;
  process.env.TZ = env.tz;
  try {
    const { cacheDir, store } = await seededBuildCache();
    return await build(await loadConfig(configFile), {
      outDir,
      logger: memoryLogger(),
      store,
      cacheDir,
      env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH },
    });
  } finally {
    process.umask(oldUmask);
    if (oldTz === undefined) delete process.env.TZ;
    else process.env.TZ = oldTz;
  }
}

/**
 * Every path the image may hold: the interpreter, the script, the content tree, the mount points,
 * and lhc-accept where the board's unit runs it (the warm containers of the default runtime).
 */
function expectedImagePaths(config: LhcConfig): string[] {
  const paths = ['/', '/bin', '/bin/lua', '/bin/gophermoon', '/gopher'];
  if (needsAcceptLoop(config)) paths.push('/usr/lib', '/usr/lib/lhc', ACCEPT_PATH);
  for (const m of ['/data', '/proc', '/sys', '/dev', '/run', '/tmp', '/usr']) paths.push(m);
  const walk = (d: string, inImage: string) => {
    for (const n of readdirSync(d)) {
      const p = path.join(d, n);
      paths.push(`${inImage}/${n}`);
      if (statSync(p).isDirectory()) walk(p, `${inImage}/${n}`);
    }
  };
  walk(path.join(GOPHERMOON_DIR, 'content'), '/gopher');
  return paths.sort();
}

describe('lhc build on examples/gophermoon', () => {
  let tmp: string;
  let a: BuildResult;
  let b: BuildResult;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-pipeline-'));
    a = await buildIn(copyExample(path.join(tmp, 'a')), path.join(tmp, 'out-a'), {
      umask: 0o022,
      tz: 'UTC',
    });
    b = await buildIn(
      copyExample(path.join(tmp, 'b'), new Date('2031-05-05T05:05:05Z')),
      path.join(tmp, 'out-b'),
      {
        umask: 0o077,
        tz: 'Pacific/Kiritimati',
      },
    );
  });

  afterAll(async () => {
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  it('gives identical bytes for image, data template and manifest', () => {
    for (const f of ARTIFACTS) {
      expect(sha256(path.join(a.outDir, f)), f).toBe(sha256(path.join(b.outDir, f)));
    }
    expect(a.imageSha256).toBe(b.imageSha256);
    expect(readFileSync(a.sha256sums!, 'utf8')).toBe(readFileSync(b.sha256sums!, 'utf8'));
  });

  it('keeps the image within 150 KB', () => {
    expect(statSync(a.image).size).toBe(a.imageBytes);
    expect(a.imageBytes).toBeLessThanOrEqual(150_000);
  });

  it('holds only the interpreter, the script, the content and the mount points', async () => {
    const manifest = await readManifest(a.manifest);
    const config = await loadConfig(path.join(GOPHERMOON_DIR, 'lhc.yml'));
    expect(needsAcceptLoop(config)).toBe(true);
    expect(manifest.image.map((e) => e.path).sort()).toEqual(expectedImagePaths(config));
    const script = manifest.image.find((e) => e.path === '/bin/gophermoon')!;
    expect(script.sha256).toBe(sha256(path.join(GOPHERMOON_DIR, 'gophermoon.lua')));
    for (const e of manifest.image) expect(e.path).not.toMatch(/^\/(etc|lib|sbin)\b|\/sh$|busybox/);
  });

  it('booted read-only, every probe matched its fixture and every hardening check passed', async () => {
    expect(a.verify?.ok).toBe(true);
    const config = await loadConfig(path.join(GOPHERMOON_DIR, 'lhc.yml'));
    const names = new Set(a.verify!.probes.map((p) => p.name));
    for (const p of config.probes) expect(names.has(p.name), p.name).toBe(true);
    expect(a.verify!.probes.filter((p) => !p.ok)).toEqual([]);
    expect(a.verify!.hardening.length).toBeGreaterThanOrEqual(7);
    expect(a.verify!.hardening.filter((h) => !h.ok)).toEqual([]);
  });

  it('matches the committed manifest lock', async () => {
    const lock = await readManifest(path.join(GOPHERMOON_DIR, 'manifest.lock.json'));
    const d = diffManifests(lock, await readManifest(a.manifest));
    expect(d.equal, JSON.stringify(d, null, 1)).toBe(true);
  });

  it('lhc diff reports exactly the one content file that changed', async () => {
    const config = copyExample(path.join(tmp, 'c'));
    const changed = path.join(path.dirname(config), 'content/moon/phases.txt');
    // Same length, so the content index (which records sizes) stays the same: one file differs.
    writeFileSync(
      changed,
      readFileSync(changed, 'utf8').replace('waxing crescent', 'Waxing Crescent'),
    );
    const c = await buildIn(config, path.join(tmp, 'out-c'), { umask: 0o022, tz: 'UTC' });
    const d = diffManifests(await readManifest(a.manifest), await readManifest(c.manifest));
    expect(d.added).toEqual([]);
    expect(d.removed).toEqual([]);
    expect(d.changed.map((x) => [x.path, x.fields])).toEqual([
      ['/gopher/moon/phases.txt', ['sha256']],
    ]);
    const r = await run(['npx', 'tsx', 'src/cli-entry.ts', 'diff', a.manifest, c.manifest], {
      cwd: REPO,
      reject: false,
    });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('/gopher/moon/phases.txt');
    expect(r.stdout).not.toContain('/gopher/moon/craters.txt');
  });
});
