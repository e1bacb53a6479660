/**
 * The job summary as a reader sees it (issue 17): two real gophermoon builds, one passing and one
 * whose text-about fixture no longer matches, rendered from the markdown summary.ts writes into a
 * GitHub-styled page and photographed by headless Chromium. The passing summary must fit one
 * 1280×1080 screen; the failing one must lead with the failing probe and its diff.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadArtifacts } from '../../src/action/artifacts.js';
import { renderSummary, type SummaryExtras } from '../../src/action/summary.js';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { LHC_VERSION } from '../../src/core/version.js';
import { build } from '../../src/pipeline.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { copyGophermoonCheckout } from '../support/gopher.js';
import { requireTool } from '../support/require-tool.js';
import { SCREEN, screenshotPage, summaryPage, type PageLayout } from '../support/summary-page.js';

const REPO = path.resolve(import.meta.dirname, '../..');
/** Where the screenshots stay for a person to look at (CI can upload the directory). */
const SHOTS = path.join(REPO, 'test-output/summary');

let workspace: string;
let passing: BuildResult;
let failing: BuildResult;

/** Builds the checkout's gophermoon config into `out` (relative to the example), as the Action would. */
async function buildExample(out: string): Promise<BuildResult> {
  const { cacheDir, store } = await seededBuildCache();
  const config = await loadConfig(path.join(workspace, 'examples/gophermoon/lhc.yml'));
  return build(config, {
    outDir: path.join(workspace, 'examples/gophermoon', out),
    logger: memoryLogger(),
    store,
    cacheDir,
  });
}

/** What the Action passes with a result: a runner's env, the real artifact plan, cache outcomes. */
async function extras(result: BuildResult): Promise<SummaryExtras> {
  const env = {
    GITHUB_WORKSPACE: workspace,
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_REPOSITORY: 'example/gophermoon',
    GITHUB_RUN_ID: '4242',
  };
  const artifacts = await uploadArtifacts(result, memoryLogger(), {
    // The plan the artifact service would get; its size is what those files weigh.
    upload: async (plan) => ({
      id: 77,
      size: plan.files.reduce((sum, f) => sum + statSync(f).size, 0),
    }),
  });
  return {
    config: 'examples/gophermoon/lhc.yml',
    version: LHC_VERSION,
    env,
    artifacts,
    cache: {
      enabled: true,
      store: { key: 'lhc-store-k', path: '~/.cache/lhc/store', restored: 'lhc-store-k' },
      lua: { key: 'lhc-lua-k', path: '~/.cache/lhc/lua', restored: 'lhc-lua-k' },
    },
  };
}

/** Renders, screenshots and keeps the PNG (also in /tmp for review); prints where it is. */
async function shoot(result: BuildResult, label: string): Promise<PageLayout> {
  const markdown = renderSummary(result, await extras(result));
  const png = path.join(SHOTS, `${label}.png`);
  const layout = await screenshotPage(summaryPage(markdown, 'build'), png);
  await copyFile(png, `/tmp/lhc-summary-${label}.png`);
  console.log(`summary screenshot (${label}, ${SCREEN.width}x${layout.height}): ${png}`);
  return layout;
}

beforeAll(async () => {
  await requireTool('chromium');
  await mkdir(SHOTS, { recursive: true });
  workspace = await mkdtemp(path.join(os.tmpdir(), 'lhc-summary-shot-'));
  copyGophermoonCheckout(workspace);
  passing = await buildExample('out');
  // The fixture no longer matches what the server says: verify fails on exactly that probe.
  const fixture = path.join(workspace, 'fixtures/gophermoon/about.text.gopher');
  const text = readFileSync(fixture, 'latin1');
  expect(text).toContain('RFC 1436');
  writeFileSync(fixture, text.replace('RFC 1436', 'RFC 1437'), 'latin1');
  failing = await buildExample('out-broken');
});

afterAll(async () => {
  if (workspace) await rm(workspace, { recursive: true, force: true });
});

describe('job summary screenshot', () => {
  it('a passing gophermoon build fits one 1280x1080 screen', async () => {
    expect(passing.verify?.ok).toBe(true);
    const layout = await shoot(passing, 'passing');
    expect(layout.blocks[0]).toMatchObject({ tag: 'h2', text: 'lhc: gophermoon ✅ passed' });
    // Everything past the one-row table is folded (probes, hardening, exposure scores, files
    // and timings), then the footer line.
    expect(layout.blocks.map((b) => b.tag)).toEqual([
      'h2',
      'table',
      'details',
      'details',
      'details',
      'details',
      'p',
    ]);
    expect(layout.height).toBeLessThanOrEqual(SCREEN.height);
  });

  it('a failing build leads with the failing probe and its diff, on the first screen', async () => {
    expect(failing.verify?.ok).toBe(false);
    const failed = failing.verify!.probes.filter((p) => !p.ok).map((p) => p.name);
    expect(failed).toEqual(['text-about']);
    const layout = await shoot(failing, 'failing');
    const tags = layout.blocks.map((b) => b.tag);
    expect(layout.blocks[0]).toMatchObject({ tag: 'h2', text: 'lhc: gophermoon ❌ failed' });
    // After the overview row: why nothing can be installed, then the failing probe, then its diff.
    expect(tags.slice(0, 5)).toEqual(['h2', 'table', 'p', 'h3', 'pre']);
    expect(layout.blocks[2]!.text).toContain('No SHA256SUMS was written');
    expect(layout.blocks[3]!.text).toBe('❌ probe text-about differs from its fixture');
    const diff = layout.blocks[4]!.text;
    expect(diff).toContain('-Gophermoon speaks Gopher (RFC 1437)');
    expect(diff).toContain('+Gophermoon speaks Gopher (RFC 1436)');
    // Paths in the diff are the workspace's, as the reader's checkout has them.
    expect(diff).toContain('--- fixture fixtures/gophermoon/about.text.gopher');
    expect(diff).not.toContain(workspace);
    // The passing probes come only after the failure, folded.
    const firstDetails = layout.blocks.find((b) => b.tag === 'details')!;
    const matched = failing.verify!.probes.length - failed.length;
    expect(firstDetails.text.startsWith(`${matched} probes matched their fixtures`)).toBe(true);
    expect(layout.blocks[3]!.top).toBeLessThan(firstDetails.top);
    expect(layout.blocks[4]!.top).toBeLessThan(SCREEN.height);
  });
});
