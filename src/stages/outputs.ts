/**
 * outputs: the one writer of what ships next to the image: the prune report
 * (<name>.trace.json), the board's deploy bundle (deploy/) and, last, SHA256SUMS over every
 * artifact. Everything it writes is reproducible, so SHA256SUMS is too.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { writeOutputFile } from '../core/safe-write.js';
import type { StageContext } from '../core/stage.js';
import type { Logger } from '../core/logger.js';
import { writeDeployBundle, type DeployBundle } from '../deploy/bundle.js';
import { formatPruneReport, type PruneReport } from '../prune/report.js';
import { sha256File } from '../store/store.js';
import type { PackResult } from './pack.js';
import { sha256sumsLine } from './sha256sums-line.js';

export interface OutputsInput {
  config: LhcConfig;
  packed: PackResult;
  report: PruneReport;
  /** The pruned root, to resolve service.user for the OCI config. */
  prunedRoot: string;
}

export interface Outputs {
  traceReport: string;
  bundle: DeployBundle;
  sha256sums: string;
}

/** Writes the prune report as JSON (stable key order, one entry a line in `list`). */
export async function writeTraceReport(
  report: PruneReport,
  file: string,
  logger?: Logger,
): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeOutputFile(file, formatPruneReport(report), { logger });
}

/**
 * Writes `SHA256SUMS` in `dir` over `files` (paths relative to dir), sorted, in the format
 * `sha256sum -c` reads (names with a backslash or newline escaped as coreutils does). Returns its path.
 */
export async function writeSha256Sums(
  dir: string,
  files: readonly string[],
  logger?: Logger,
): Promise<string> {
  const lines: string[] = [];
  for (const f of [...new Set(files)].sort()) {
    lines.push(sha256sumsLine(await sha256File(path.join(dir, f)), f));
  }
  const out = path.join(dir, 'SHA256SUMS');
  await writeOutputFile(out, lines.join('\n') + '\n', { logger });
  return out;
}

export async function writeOutputs(ctx: StageContext, input: OutputsInput): Promise<Outputs> {
  const { config, packed } = input;
  const traceReport = path.join(ctx.outDir, `${config.name}.trace.json`);
  await writeTraceReport(input.report, traceReport, ctx.logger);
  const bundle = await writeDeployBundle({
    name: config.name,
    outDir: ctx.outDir,
    service: config.service,
    dataPath: config.data.path,
    imageFile: path.basename(packed.image),
    dataTemplateFile: path.basename(packed.dataTemplate),
    root: input.prunedRoot,
    logger: ctx.logger,
  });
  const sha256sums = await writeSha256Sums(
    ctx.outDir,
    [
      path.basename(packed.image),
      path.basename(packed.dataTemplate),
      path.basename(packed.manifest),
      path.basename(traceReport),
      ...bundle.files,
    ],
    ctx.logger,
  );
  return { traceReport, bundle, sha256sums };
}
