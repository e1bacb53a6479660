/**
 * The exposure score of every service unit in the deploy bundle, as `systemd-analyze security
 * --offline=true` computes it from the unit file, written next to the manifest as
 * `<name>.exposure.json` (a file of its own, so the manifest and its lock describe the image only).
 *
 * The score reads the unit's own directives. For the nspawn runtime it sees a unit that runs
 * systemd-nspawn as root with no sandbox directives, and scores it near 10; nspawn's confinement
 * (namespaces, read-only root, dropped capabilities, user namespace) is set up by that process
 * and invisible to systemd-analyze. The systemd runtime's unit carries the sandbox itself.
 */
import path from 'node:path';
import type { Runtime } from '../config/schema.js';
import type { Logger } from '../core/logger.js';
import { writeOutputFile } from '../core/safe-write.js';
import { exposureScore, systemdVersion, type ExposureScore } from '../tools/systemd-analyze.js';

/** The systemd runtime's goal: "OK" or better in systemd's words. */
export const EXPOSURE_GOAL = 2.0;

export interface UnitExposure extends ExposureScore {
  /** The unit file, relative to the output directory (deploy/<unit>). */
  file: string;
}

export interface ExposureReport {
  runtime: Runtime;
  /** The systemd whose systemd-analyze scored the units. */
  systemd: string;
  units: UnitExposure[];
}

export function exposureFileName(name: string): string {
  return `${name}.exposure.json`;
}

/** Scores `files` (relative to outDir); undefined, with a warning, when systemd-analyze cannot. */
export async function scoreUnits(
  outDir: string,
  files: readonly string[],
  runtime: Runtime,
  logger: Logger,
): Promise<ExposureReport | undefined> {
  try {
    // Independent runs, at once; a failure is reported as a sequential run would have met it.
    const [v, ...scores] = await Promise.allSettled([
      systemdVersion(),
      ...files.map((file) => exposureScore(path.join(outDir, file))),
    ]);
    if (v!.status === 'rejected') throw v!.reason;
    const version = v!.value as Awaited<ReturnType<typeof systemdVersion>>;
    if (!version) throw new Error('systemd-analyze --version failed');
    const units: UnitExposure[] = files.map((file, i) => {
      const score = scores[i]!;
      if (score.status === 'rejected') throw score.reason;
      return { file, ...(score.value as Awaited<ReturnType<typeof exposureScore>>) };
    });
    return { runtime, systemd: version, units };
  } catch (e) {
    logger.warn(
      `no exposure scores: systemd-analyze security --offline=true (systemd 250 or newer) failed: ${(e as Error).message}`,
    );
    return undefined;
  }
}

export function formatExposure(r: ExposureReport): string {
  return JSON.stringify(r, null, 2) + '\n';
}

export async function writeExposure(
  outDir: string,
  name: string,
  report: ExposureReport,
  logger?: Logger,
): Promise<string> {
  const file = path.join(outDir, exposureFileName(name));
  await writeOutputFile(file, formatExposure(report), { logger });
  return file;
}

/** One line for logs and summaries: "gophermoon@i.service 0.3 SAFE, ...". */
export function exposureLine(r: ExposureReport): string {
  return r.units.map((u) => `${u.unit} ${u.score.toFixed(1)} ${u.level}`).join(', ');
}
