/**
 * outputs: the one writer of what ships next to the image: the prune report
 * (<name>.trace.json), the board's deploy bundle (deploy/) and, once verify has spoken, either
 * SHA256SUMS over every artifact (a passing build) or `<name>.build-failed.txt` (a failed one).
 * Everything a passing build writes is reproducible, so SHA256SUMS is too.
 */
import { readRunAs } from './service-user.js';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { writeOutputFile } from '../core/safe-write.js';
import type { StageContext } from '../core/stage.js';
import type { Logger } from '../core/logger.js';
import { writeDeployBundle, type DeployBundle } from '../deploy/bundle.js';
import {
  exposureLine,
  scoreUnits,
  writeExposure,
  type ExposureReport,
} from '../deploy/exposure.js';
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
  /** systemd-analyze's exposure score of each service unit; absent when it could not run. */
  exposure?: ExposureReport;
  /** Every file SHA256SUMS will cover, relative to the output dir. */
  files: string[];
}

/** What sealOutputs() left: SHA256SUMS for a passing build, the failure report for a failed one. */
export interface Seal {
  sha256sums?: string;
  failureReport?: string;
}

export function failureReportPath(outDir: string, name: string): string {
  return path.join(outDir, `${name}.build-failed.txt`);
}

/**
 * Removes a SHA256SUMS left by an earlier build into the same dir, before pack overwrites the
 * image it vouched for: a build that then fails or is cancelled must not leave one behind.
 */
export async function retractSha256Sums(outDir: string): Promise<void> {
  await rm(path.join(outDir, 'SHA256SUMS'), { force: true });
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
    runAs: await readRunAs(config, input.prunedRoot),
    runtime: config.deploy.runtime,
    warmContainers: config.deploy['warm-containers'],
    logger: ctx.logger,
  });
  const serviceUnits = [bundle.units.service, ...(bundle.units.proxy ? [bundle.units.proxy] : [])];
  const exposure = await scoreUnits(
    ctx.outDir,
    serviceUnits.map((u) => `deploy/${u}`),
    config.deploy.runtime,
    ctx.logger,
  );
  const exposureFile = exposure
    ? await writeExposure(ctx.outDir, config.name, exposure, ctx.logger)
    : undefined;
  if (exposure) ctx.logger.info(`exposure (systemd-analyze security): ${exposureLine(exposure)}`);
  const files = [
    path.basename(packed.image),
    path.basename(packed.dataTemplate),
    path.basename(packed.manifest),
    path.basename(traceReport),
    ...bundle.files,
    ...(exposureFile ? [path.basename(exposureFile)] : []),
  ];
  return { traceReport, bundle, exposure, files };
}

/**
 * The last write of a build. A passing build gets SHA256SUMS (deploy/install.sh refuses to
 * install without it) and loses a failure report left by an earlier run; a failed build gets
 * `<name>.build-failed.txt` with `failure` (what failed, with diffs) and no SHA256SUMS, so its
 * image cannot be flashed by mistake.
 */
export async function sealOutputs(
  ctx: StageContext,
  input: { name: string; files: readonly string[]; failure?: string },
): Promise<Seal> {
  const report = failureReportPath(ctx.outDir, input.name);
  if (input.failure === undefined) {
    if (existsSync(report)) {
      await rm(report, { force: true });
      ctx.logger.info(`removed ${path.basename(report)} left by an earlier failed build`);
    }
    return { sha256sums: await writeSha256Sums(ctx.outDir, input.files, ctx.logger) };
  }
  await retractSha256Sums(ctx.outDir);
  await writeOutputFile(
    report,
    `lhc build of ${input.name} FAILED: do not deploy this output.\n` +
      'No SHA256SUMS was written, so deploy/install.sh refuses to install it.\n\n' +
      `${input.failure.trimEnd()}\n`,
    { logger: ctx.logger },
  );
  ctx.logger.warn(
    `build failed: no SHA256SUMS written; what failed is in ${path.basename(report)} in ${ctx.outDir}`,
  );
  return { failureReport: report };
}
