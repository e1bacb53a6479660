/**
 * The action shell: inputs → the same build() the CLI runs → outputs. Only this directory
 * imports @actions/core.
 */
import * as core from '@actions/core';
import { buildFailures, buildOk, type BuildResult } from '../build-result.js';
import { verifyOnBoard } from '../board/verify-board.js';
import { loadConfig } from '../config/load.js';
import { describeError } from '../core/errors.js';
import { realProbe } from '../host/probe.js';
import { setupHost } from '../host/setup.js';
import { build } from '../pipeline.js';
import { readInputs } from './inputs.js';
import { uploadArtifacts } from './artifacts.js';
import { cachePlan, restoreCaches, saveCaches } from './cache.js';
import { actionsLogger } from './logger.js';
import { writeSummary, type BoardSummary } from './summary.js';
import { LHC_VERSION } from '../core/version.js';

/** How a user of the action rewrites the lock; the CLI names its flag instead. */
export const UPDATE_MANIFEST_HINT = 'the `update-manifest: true` input';

/** Output name → value, as declared in action.yml. `board` is undefined when it did not run. */
export function outputsOf(r: BuildResult, board?: BoardSummary): Record<string, string> {
  return {
    image: r.image,
    'image-sha256': r.imageSha256,
    'data-template': r.dataTemplate,
    manifest: r.manifest,
    sha256sums: r.sha256sums ?? '',
    'failure-report': r.failureReport ?? '',
    'bytes-before': String(r.bytesBefore),
    'bytes-after': String(r.bytesAfter),
    'files-kept': String(r.filesKept),
    'verify-ok': r.verify ? String(r.verify.ok) : '',
    'manifest-changed': String(r.manifestDiff !== undefined),
    'board-ok': board && !board.skipped ? String(board.ok) : '',
  };
}

/** The message setFailed gets: user and tool errors without a stack, bugs with one. */
export const failureMessage = describeError;

export async function run(signal?: AbortSignal): Promise<void> {
  try {
    const inputs = readInputs((name) => core.getInput(name));
    const logger = actionsLogger();
    const config = await loadConfig(inputs.config);
    const summaryBase = {
      config: inputs.config,
      version: LHC_VERSION,
      env: process.env,
      manifestLock: inputs.manifestLock
        ? { path: inputs.manifestLock, updated: inputs.updateManifest }
        : undefined,
    };
    // Runners are fresh machines: install and register what is missing (sudo -n when not root).
    await logger.group('Host setup', () => setupHost(realProbe, logger));
    const cache = await logger.group('Restore cache', () =>
      restoreCaches(cachePlan(config, { board: inputs.board }), logger, { enabled: inputs.cache }),
    );
    let result: BuildResult;
    try {
      result = await build(config, {
        outDir: inputs.outDir ?? config.outputs.dir,
        logger,
        verify: inputs.verify,
        manifestLock: inputs.manifestLock,
        updateManifest: inputs.updateManifest,
        updateFixtures: inputs.updateFixtures,
        force: inputs.force,
        ...(signal ? { signal } : {}),
      });
    } finally {
      // Downloads and a verified Lua are worth keeping even when a later stage failed.
      await logger.group('Save cache', () => saveCaches(cache, logger));
    }
    if (result.manifestLock?.updated)
      core.notice(`manifest lock ${result.manifestLock.path} was updated by this build: commit it`);
    for (const f of result.fixtures ?? [])
      if (f.change !== 'unchanged')
        core.notice(
          `fixture ${f.path} (probe ${f.probe}) was ${f.change === 'new' ? 'recorded' : 'rewritten'} by this build (${f.bytes} bytes): review and commit it`,
        );
    const board = inputs.board ? await boardVerify(config, result, logger, signal) : undefined;
    for (const [name, value] of Object.entries(outputsOf(result, board)))
      core.setOutput(name, value);
    const artifacts = await logger.group('Upload artifacts', () =>
      uploadArtifacts(result, logger, {
        name: inputs.artifactName,
        enabled: inputs.uploadArtifacts,
      }),
    );
    await writeSummary(result, { ...summaryBase, cache, artifacts, board }, logger);
    const failed = [buildFailures(result, UPDATE_MANIFEST_HINT)];
    if (board && !board.skipped && !board.ok)
      failed.push(`board verify failed${board.error ? `: ${board.error}` : ''}`);
    const message = failed.filter((f) => f !== '').join('\n\n');
    if (message) core.setFailed(`${config.name}: ${message}`);
  } catch (e) {
    core.setFailed(failureMessage(e));
  }
}

/**
 * The simulated board (`board: true`): boots a Debian systemd machine, installs the output with
 * deploy/install.sh and probes its real port. Only a passing build is tried: a failed one has no
 * SHA256SUMS, which install.sh rightly refuses. An error becomes a failed result, so the outputs
 * and the summary are still written.
 */
async function boardVerify(
  config: Awaited<ReturnType<typeof loadConfig>>,
  result: BuildResult,
  logger: ReturnType<typeof actionsLogger>,
  signal?: AbortSignal,
): Promise<BoardSummary> {
  if (!buildOk(result)) return { ok: false, skipped: 'the build failed' };
  return logger.group('Board verify', async () => {
    try {
      const report = await verifyOnBoard({
        config,
        outDir: result.outDir,
        logger,
        ...(signal ? { signal } : {}),
      });
      return { ok: report.ok, report };
    } catch (e) {
      return { ok: false, error: failureMessage(e) };
    }
  });
}
