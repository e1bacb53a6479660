/**
 * The whole job, stage by stage: fetch → lua → root → trace → prune → pack → verify.
 * The CLI's `lhc build`, the action and the tests all call build().
 */
import type { BuildResult } from './build-result.js';
import type { LhcConfig } from './config/load.js';
import { UserError } from './core/errors.js';
import type { Logger } from './core/logger.js';

export interface BuildOptions {
  outDir: string;
  logger: Logger;
  /** Boot the pruned image and check the probes (default true). */
  verify?: boolean;
  manifestLock?: string;
  updateManifest?: boolean;
  /** Working directory for intermediate roots; default a temp dir removed afterwards. */
  workDir?: string;
  keepWorkDir?: boolean;
  signal?: AbortSignal;
}

export async function build(_config: LhcConfig, _opts: BuildOptions): Promise<BuildResult> {
  throw new UserError('lhc build: the pipeline is being wired up (not implemented yet)');
}
