/**
 * Prune: a new root holding only what the traced run proves the service needs and the closure
 * that makes those files work (../prune/closure.ts), written with owners, modes and times
 * (../prune/materialize.ts), and a report of what was kept and why (../prune/report.ts).
 * Anything under the data path goes to the data template instead of the image.
 */
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import type { StageContext } from '../core/stage.js';
import { seedDataDir } from '../harness/data.js';
import { computeClosure, walkRoot } from '../prune/closure.js';
import { writePrunedRoot } from '../prune/materialize.js';
import { buildReport, summarizeReport, type PruneReport } from '../prune/report.js';
import { mountPoints } from '../tools/nspawn.js';
import type { RunAs } from '../service-user/passwd.js';
import type { TraceResult } from './trace.js';

export interface PruneResult {
  prunedRoot: string;
  /** The data template's directory (the root's data path plus data.template). */
  dataDir: string;
  report: PruneReport;
}

export interface PruneInput {
  /** The assembled (unpruned) root. */
  root: string;
  trace: TraceResult;
  config: LhcConfig;
  /** service.user's ids: the data dir's top belongs to them, as in the packed template. */
  runAs?: RunAs;
}

/** Writes `root/` (the pruned root) and `data/` into ctx.work.pruned, replacing them if present. */
export async function pruneRoot(
  ctx: StageContext,
  { root, trace, config, runAs }: PruneInput,
): Promise<PruneResult> {
  const { logger } = ctx;
  const all = walkRoot(root);
  const closure = await computeClosure(root, all, trace, config, logger);
  const prunedRoot = path.join(ctx.work.pruned, 'root');
  const dataDir = path.join(ctx.work.pruned, 'data');
  const list = await writePrunedRoot(
    root,
    all,
    closure.kept,
    mountPoints(config.data.path, config.deploy.runtime),
    prunedRoot,
    logger,
  );
  await seedDataDir(config, root, dataDir, runAs);
  const report = buildReport(config.name, all, list, closure, trace);
  logger.info(summarizeReport(report));
  return { prunedRoot, dataDir, report };
}
