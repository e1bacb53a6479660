/**
 * examples/redis on the shared Debian arm64 base: redis-server listens on 6379, answers raw-TCP
 * probes in RESP (PING, a SET/GET round trip, a missing key), and writes only under /data.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PruneReport } from '../../src/prune/report.js';
import {
  EXAMPLE_BUILD_TIMEOUT_MS,
  NEVER_IN_IMAGE,
  REPO,
  BOARD_VERIFY_TIMEOUT_MS,
  buildExample,
  expectBoardOk,
  type ExampleBuild,
} from '../support/example-build.js';

describe('lhc build on examples/redis (listen, tcp probes, writes under /data)', () => {
  let b: ExampleBuild;
  let report: PruneReport;

  beforeAll(async () => {
    b = await buildExample('redis');
    report = JSON.parse(readFileSync(b.result.traceReport, 'utf8')) as PruneReport;
  }, EXAMPLE_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await b?.cleanup();
  });

  it('wrote its append-only file under /data and nothing anywhere else', () => {
    expect(report.writtenOutsideData).toEqual([]);
    expect(report.writtenUnderData).toContain('/data/appendonlydir/appendonly.aof.manifest');
  });

  it('keeps redis-server and its libraries, and no shell, package manager or redis-cli', () => {
    expect(b.imagePaths).toContain('/usr/bin/redis-server');
    expect(b.imagePaths).toContain('/usr/bin/redis-check-rdb');
    for (const p of [...NEVER_IN_IMAGE, '/usr/bin/redis-cli', '/usr/bin/redis-benchmark'])
      expect(b.imagePaths).not.toContain(p);
    expect(b.result.bytesAfter / b.result.bytesBefore).toBeLessThan(0.1);
  });

  it('matches the committed manifest lock', () => {
    expect(b.result.manifestDiff).toBeUndefined();
  });

  it('answers PING, SET/GET and a missing key like the fixtures, from the read-only image', () => {
    const v = b.result.verify!;
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.find((p) => p.name === 'set-get')?.bytes).toBe(
      readFileSync(path.join(REPO, 'fixtures/redis/set-get.resp')).length,
    );
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 20, failures: 0 });
    expect(v.ok).toBe(true);
  });
  it(
    'answers every probe on the simulated board, installed by deploy/install.sh',
    async () => {
      const config = await loadConfig(path.join(REPO, 'examples/redis/lhc.yml'));
      await expectBoardOk(config, b.result.outDir);
    },
    BOARD_VERIFY_TIMEOUT_MS,
  );
});
