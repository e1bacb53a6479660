/**
 * Builds one of the real-service examples (lighttpd, redis, micro-httpd, pygopherd) the way CI
 * does: straight from examples/<name>/lhc.yml, checked against its committed manifest lock. The
 * four share one Debian base (the same base.packages, cached by that list under
 * $LHC_TEST_CACHE/bases), so CI runs mmdebstrap for them once.
 */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { formatBoardReport, verifyOnBoard } from '../../src/board/verify-board.js';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { readManifest } from '../../src/manifest/diff.js';
import { build } from '../../src/pipeline.js';
import { run } from '../../src/tools/exec.js';
import { seededBuildCache, testCacheDir } from './debian-inputs.js';

export const REPO = path.resolve(import.meta.dirname, '../..');

/** The one package list of the Debian examples' shared base, sorted as the base cache key sorts it. */
export const SHARED_DEBIAN_PACKAGES = ['lighttpd', 'micro-httpd', 'pygopherd', 'redis-server'];

/** A cold machine makes the shared Debian base first: mmdebstrap under QEMU, many minutes. */
export const EXAMPLE_BUILD_TIMEOUT_MS = 2_400_000;

export interface ExampleBuild {
  result: BuildResult;
  /** Paths in the image, from the manifest. */
  imagePaths: string[];
  /** The build's log lines (prune summary, kept reasons, verify rows). */
  log: string[];
  /** Removes the output directory. */
  cleanup(): Promise<void>;
}

export async function buildExample(name: string): Promise<ExampleBuild> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), `lhc-${name}-`));
  const { cacheDir, store } = await seededBuildCache();
  const logger = memoryLogger();
  const config = await loadConfig(path.join(REPO, 'examples', name, 'lhc.yml'));
  const result = await build(config, {
    outDir: path.join(tmp, 'out'),
    logger,
    store,
    cacheDir,
    basesDir: path.join(testCacheDir(), 'bases'),
    manifestLock: path.join(REPO, 'examples', name, 'manifest.lock.json'),
    requests: 20,
    concurrency: 4,
    env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
  });
  return {
    result,
    imagePaths: (await readManifest(result.manifest)).image.map((e) => e.path),
    log: logger.lines,
    cleanup: async () => {
      await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
    },
  };
}

/** Shells, package managers and tools a service image must not carry. */
export const NEVER_IN_IMAGE = [
  '/bin/sh',
  '/usr/bin/sh',
  '/bin/bash',
  '/usr/bin/bash',
  '/usr/bin/dash',
  '/usr/bin/apt',
  '/usr/bin/dpkg',
  '/usr/bin/ls',
  '/usr/bin/perl',
];

/** The board root is made once (minutes cold); the booted board, install and probes take ~1 min. */
export const BOARD_VERIFY_TIMEOUT_MS = 900_000;

/**
 * The release installed by deploy/install.sh on the simulated board and probed on the board's
 * own port, as `lhc verify --board` does; fails with the board report (and its journal).
 */
export async function expectBoardOk(config: LhcConfig, outDir: string): Promise<void> {
  const report = await verifyOnBoard({ config, outDir, logger: memoryLogger() });
  expect(report.ok, formatBoardReport(report).join('\n')).toBe(true);
  expect(report.probes.map((p) => p.name).slice(0, config.probes.length)).toEqual(
    config.probes.map((p) => p.name),
  );
}
