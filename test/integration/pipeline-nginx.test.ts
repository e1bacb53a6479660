/**
 * The pipeline on a real dynamically linked service: nginx-light on a Debian arm64 base, traced
 * under QEMU, pruned to what it uses, packed, then booted read-only and probed over HTTP.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { readManifest } from '../../src/manifest/diff.js';
import { build } from '../../src/pipeline.js';
import { run } from '../../src/tools/exec.js';
import { testCacheDir } from '../support/debian-inputs.js';

const REPO = path.resolve(import.meta.dirname, '../..');

describe('lhc build on examples/nginx (debian arm64 base)', () => {
  let tmp: string;
  let result: BuildResult;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-nginx-'));
    const config = await loadConfig(path.join(REPO, 'examples/nginx/lhc.yml'));
    result = await build(config, {
      outDir: path.join(tmp, 'out'),
      logger: memoryLogger(),
      // Shared with the root and trace tests: the Debian base takes minutes to make.
      basesDir: path.join(testCacheDir(), 'bases'),
      cacheDir: path.join(testCacheDir(), 'lhc-cache'),
      requests: 50,
      concurrency: 4,
    });
    // A fresh machine first makes the Debian base with mmdebstrap under QEMU (minutes).
  }, 1_800_000);

  afterAll(async () => {
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  it('prunes the root to at most 5 % of the base bytes', () => {
    expect(result.bytesBefore).toBeGreaterThan(100_000_000);
    expect(result.bytesAfter / result.bytesBefore).toBeLessThanOrEqual(0.05);
  });

  it('leaves no shell, package manager or coreutils in the image', async () => {
    const paths = (await readManifest(result.manifest)).image.map((e) => e.path);
    expect(paths).toContain('/usr/sbin/nginx');
    for (const p of [
      '/bin/sh',
      '/usr/bin/sh',
      '/bin/bash',
      '/usr/bin/dash',
      '/usr/bin/apt',
      '/usr/bin/dpkg',
      '/usr/bin/ls',
    ]) {
      expect(paths).not.toContain(p);
    }
  });

  it('still answers / with 200 and the fixture body, from the booted read-only image', () => {
    const v = result.verify!;
    expect(v.ok).toBe(true);
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.find((p) => p.name === 'index')?.bytes).toBe(
      readFileSync(path.join(REPO, 'fixtures/nginx/index.html')).length,
    );
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 50, failures: 0 });
  });
});
