/**
 * The last write of a build: a passing build gets SHA256SUMS and loses an earlier failure report;
 * a failed one gets <name>.build-failed.txt and keeps no SHA256SUMS (install.sh needs it).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../src/core/logger.js';
import type { StageContext } from '../../src/core/stage.js';
import { failureReportPath, retractSha256Sums, sealOutputs } from '../../src/stages/outputs.js';
import { sha256File } from '../../src/store/store.js';

let dir: string;
let logger: ReturnType<typeof memoryLogger>;
let ctx: StageContext;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-seal-'));
  logger = memoryLogger();
  // Only outDir and logger are read by sealOutputs.
  ctx = { outDir: dir, logger } as unknown as StageContext;
  await writeFile(path.join(dir, 'moon.squashfs'), 'image bytes');
  await writeFile(path.join(dir, 'moon.manifest.json'), '{}');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const files = ['moon.squashfs', 'moon.manifest.json'];

describe('sealOutputs', () => {
  it('a passing build: SHA256SUMS over the files, no failure report', async () => {
    const seal = await sealOutputs(ctx, { name: 'moon', files });
    expect(seal).toEqual({ sha256sums: path.join(dir, 'SHA256SUMS') });
    const sums = await readFile(seal.sha256sums!, 'utf8');
    expect(sums).toContain(`${await sha256File(path.join(dir, 'moon.squashfs'))}  moon.squashfs\n`);
    expect(existsSync(failureReportPath(dir, 'moon'))).toBe(false);
  });

  it('a failed build: the report with what failed, and an earlier SHA256SUMS removed', async () => {
    await sealOutputs(ctx, { name: 'moon', files });
    expect(existsSync(path.join(dir, 'SHA256SUMS'))).toBe(true);
    const seal = await sealOutputs(ctx, {
      name: 'moon',
      files,
      failure: 'verify failed:\nprobe root\n-a\n+b',
    });
    expect(seal).toEqual({ failureReport: path.join(dir, 'moon.build-failed.txt') });
    expect(existsSync(path.join(dir, 'SHA256SUMS'))).toBe(false);
    const report = await readFile(seal.failureReport!, 'utf8');
    expect(report).toMatch(/^lhc build of moon FAILED: do not deploy this output\.\n/);
    expect(report).toContain('No SHA256SUMS was written');
    expect(report).toContain('probe root\n-a\n+b\n');
    expect(logger.lines.join('\n')).toMatch(/warning: build failed: no SHA256SUMS written/);
  });

  it('a passing rebuild into the same dir removes the failure report', async () => {
    await sealOutputs(ctx, { name: 'moon', files, failure: 'verify failed' });
    expect(existsSync(failureReportPath(dir, 'moon'))).toBe(true);
    const seal = await sealOutputs(ctx, { name: 'moon', files });
    expect(existsSync(failureReportPath(dir, 'moon'))).toBe(false);
    expect(existsSync(seal.sha256sums!)).toBe(true);
    expect(logger.lines.join('\n')).toContain('removed moon.build-failed.txt');
  });

  it('retractSha256Sums removes an earlier SHA256SUMS and tolerates none', async () => {
    await retractSha256Sums(dir);
    await sealOutputs(ctx, { name: 'moon', files });
    await retractSha256Sums(dir);
    expect(existsSync(path.join(dir, 'SHA256SUMS'))).toBe(false);
  });
});
