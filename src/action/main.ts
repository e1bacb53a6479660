/**
 * The action shell: inputs → the same build() the CLI runs → outputs. Only this directory
 * imports @actions/core.
 */
import * as core from '@actions/core';
import { verifyFailures, type BuildResult } from '../build-result.js';
import { loadConfig } from '../config/load.js';
import { describeError } from '../core/errors.js';
import { realProbe } from '../host/probe.js';
import { setupHost } from '../host/setup.js';
import { build } from '../pipeline.js';
import { readInputs } from './inputs.js';
import { uploadArtifacts } from './artifacts.js';
import { cachePlan, restoreCaches, saveCaches } from './cache.js';
import { actionsLogger } from './logger.js';
import { writeSummary } from './summary.js';
import { LHC_VERSION } from '../core/version.js';

/** Output name → value, as declared in action.yml. */
export function outputsOf(r: BuildResult): Record<string, string> {
  return {
    image: r.image,
    'image-sha256': r.imageSha256,
    'data-template': r.dataTemplate,
    manifest: r.manifest,
    sha256sums: r.sha256sums,
    'bytes-before': String(r.bytesBefore),
    'bytes-after': String(r.bytesAfter),
    'files-kept': String(r.filesKept),
    'verify-ok': r.verify ? String(r.verify.ok) : '',
    'manifest-changed': String(r.manifestDiff !== undefined),
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
      restoreCaches(cachePlan(config), logger, { enabled: inputs.cache }),
    );
    let result: BuildResult;
    try {
      result = await build(config, {
        outDir: inputs.outDir ?? config.outputs.dir,
        logger,
        verify: inputs.verify,
        manifestLock: inputs.manifestLock,
        updateManifest: inputs.updateManifest,
        force: inputs.force,
        ...(signal ? { signal } : {}),
      });
    } finally {
      // Downloads and a verified Lua are worth keeping even when a later stage failed.
      await logger.group('Save cache', () => saveCaches(cache, logger));
    }
    for (const [name, value] of Object.entries(outputsOf(result))) core.setOutput(name, value);
    const artifacts = await logger.group('Upload artifacts', () =>
      uploadArtifacts(result, logger, {
        name: inputs.artifactName,
        enabled: inputs.uploadArtifacts,
      }),
    );
    await writeSummary(result, { ...summaryBase, cache, artifacts }, logger);
    if (result.verify && !result.verify.ok) {
      core.setFailed(`verify failed for ${config.name}:\n${verifyFailures(result.verify)}`);
    }
  } catch (e) {
    core.setFailed(failureMessage(e));
  }
}
