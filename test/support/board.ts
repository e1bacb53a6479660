/**
 * Inputs for the simulated-board tests: the board root (mmdebstrap, cached with the other test
 * inputs), and real build outputs (build() with verify off; the board is what verifies them):
 * gophermoon, a gophermoon v2 whose about.txt differs, and nginx on its Debian arm64 base.
 */
import { randomBytes } from 'node:crypto';
import { cp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { boardRootTarball } from '../../src/board/root.js';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { build } from '../../src/pipeline.js';
import { seededBuildCache, testCacheDir } from './debian-inputs.js';
import { GOPHERMOON_CONFIG, GOPHERMOON_CONTENT, REPO } from './gopher.js';

export const NGINX_CONFIG = path.join(REPO, 'examples/nginx/lhc.yml');

/** The board root, made once per machine (about 1 min, minutes under load) and cached. */
export function testBoardTarball(): Promise<string> {
  return boardRootTarball({ logger: memoryLogger(), cacheDir: path.join(testCacheDir(), 'board') });
}

export async function buildOut(config: LhcConfig, dir: string): Promise<BuildResult> {
  const { cacheDir, store } = await seededBuildCache();
  return build(config, {
    outDir: path.join(dir, 'out'),
    workDir: path.join(dir, 'work'),
    logger: memoryLogger(),
    store,
    cacheDir,
    // Shared with the nginx pipeline test: the Debian arm64 base takes minutes to make.
    basesDir: path.join(testCacheDir(), 'bases'),
    verify: false,
    env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
  });
}

export async function gophermoonConfig(): Promise<LhcConfig> {
  return loadConfig(GOPHERMOON_CONFIG);
}

/**
 * gophermoon with a random marker written over the start of about.txt's third line (same
 * size, so the content index stays right). Returns the config and the marker.
 */
export async function gophermoonV2(dir: string): Promise<{ config: LhcConfig; marker: string }> {
  const config = await gophermoonConfig();
  const content = path.join(dir, 'content-v2');
  await cp(GOPHERMOON_CONTENT, content, { recursive: true });
  const about = path.join(content, 'about.txt');
  const lines = (await readFile(about, 'utf8')).split('\n');
  const marker = `v2x${randomBytes(4).toString('hex')}`;
  const i = lines.findIndex((l, n) => n >= 2 && l.length >= marker.length && !l.startsWith('.'));
  lines[i] = marker + lines[i]!.slice(marker.length);
  await writeFile(about, lines.join('\n'));
  return {
    config: {
      ...config,
      files: config.files.map((f) => (f.dst === '/gopher' ? { ...f, src: content } : f)),
    },
    marker,
  };
}
