/**
 * Uploads what a board needs (image, data template, deploy bundle) and what a reviewer needs
 * (manifest, SHA256SUMS, trace report) as one workflow artifact. Outside GitHub there is no
 * artifact service, so the upload is skipped with a notice and the files stay in the out dir.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import * as core from '@actions/core';
import { DefaultArtifactClient } from '@actions/artifact';
import type { BuildResult } from '../build-result.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

/** Characters the artifact service refuses in a name. */
const BAD_NAME_CHARS = /["<>|*?\r\n\\/:]/;

/** The artifact name: the input when given, else `lhc-<config name>`. */
export function artifactName(input: string | undefined, result: Pick<BuildResult, 'name'>): string {
  const name = input?.trim() || `lhc-${result.name}`;
  const bad = BAD_NAME_CHARS.exec(name);
  if (bad) {
    throw new UserError(
      `artifact-name "${name}" contains ${JSON.stringify(bad[0])}; names may not contain " : < > | * ? \\ / or line breaks`,
    );
  }
  return name;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
    // Symlinks in a bundle would be uploaded as their target's bytes or fail; the bundle has none.
  }
  return out;
}

/** Deepest directory containing every path (the artifact's root, so names stay relative). */
export function commonRoot(paths: readonly string[]): string {
  if (paths.length === 0) throw new Error('commonRoot of no paths');
  const split = paths.map((p) => path.dirname(path.resolve(p)).split(path.sep));
  const first = split[0]!;
  let n = first.length;
  for (const parts of split) {
    let i = 0;
    while (i < n && i < parts.length && parts[i] === first[i]) i++;
    n = i;
  }
  return first.slice(0, n).join(path.sep) || path.sep;
}

export interface ArtifactPlan {
  name: string;
  rootDirectory: string;
  /** Absolute paths, sorted, no duplicates. */
  files: string[];
}

/**
 * The files of a build that go into the artifact; a missing one is an error naming it. A failed
 * build has no SHA256SUMS but its failure report, so whoever downloads it sees why.
 */
export async function artifactPlan(result: BuildResult, name: string): Promise<ArtifactPlan> {
  const singles = [
    result.image,
    result.dataTemplate,
    result.manifest,
    result.sha256sums ?? result.failureReport,
    result.traceReport,
  ].filter((f): f is string => f !== undefined);
  const files = new Set<string>();
  for (const f of singles) {
    const s = await stat(f).catch(() => undefined);
    if (!s?.isFile()) throw new Error(`build output ${f} is missing; nothing was uploaded`);
    files.add(path.resolve(f));
  }
  const bundle = await stat(result.bundleDir).catch(() => undefined);
  if (!bundle?.isDirectory())
    throw new Error(`deploy bundle directory ${result.bundleDir} is missing; nothing was uploaded`);
  for (const f of await filesUnder(path.resolve(result.bundleDir))) files.add(f);
  const sorted = [...files].sort();
  return { name, rootDirectory: commonRoot(sorted), files: sorted };
}

export interface ArtifactReport {
  name: string;
  uploaded: boolean;
  files: number;
  id?: number;
  size?: number;
  /** Why nothing was uploaded. */
  skipped?: string;
}

export interface UploadOptions {
  /** The action's `artifact-name` input (empty = default). */
  name?: string;
  /** The action's `upload-artifacts` input. */
  enabled?: boolean;
  env?: NodeJS.ProcessEnv;
  /** For tests: where the plan goes instead of the artifact service. */
  upload?: (plan: ArtifactPlan) => Promise<{ id?: number; size?: number }>;
}

/** True when the runner gave this process the token the artifact service needs. */
export function artifactServiceAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.ACTIONS_RUNTIME_TOKEN && !!env.ACTIONS_RESULTS_URL;
}

async function uploadWithClient(plan: ArtifactPlan): Promise<{ id?: number; size?: number }> {
  const client = new DefaultArtifactClient();
  const r = await client.uploadArtifact(plan.name, plan.files, plan.rootDirectory);
  return { id: r.id, size: r.size };
}

/**
 * Uploads the build's files. Skipped (with a notice) outside GitHub or when turned off; an upload
 * that was asked for and fails throws, because a release or a flashing job depends on it.
 */
export async function uploadArtifacts(
  result: BuildResult,
  logger: Logger,
  opts: UploadOptions = {},
): Promise<ArtifactReport> {
  const name = artifactName(opts.name, result);
  if (opts.enabled === false) {
    logger.debug('artifacts: upload-artifacts is false, not uploading');
    return { name, uploaded: false, files: 0, skipped: 'turned off by input' };
  }
  const plan = await artifactPlan(result, name);
  if (!opts.upload && !artifactServiceAvailable(opts.env)) {
    core.notice(
      `artifacts: no artifact service outside GitHub Actions; the ${plan.files.length} files stay in ${result.outDir}`,
    );
    return { name, uploaded: false, files: plan.files.length, skipped: 'no artifact service' };
  }
  logger.info(
    `artifacts: uploading ${plan.files.length} files from ${plan.rootDirectory} as ${name}`,
  );
  try {
    const r = await (opts.upload ?? uploadWithClient)(plan);
    logger.info(
      `artifacts: uploaded ${name}${r.id ? ` (id ${r.id}, ${r.size ?? '?'} bytes)` : ''}`,
    );
    return { name, uploaded: true, files: plan.files.length, id: r.id, size: r.size };
  } catch (e) {
    throw new Error(
      `artifact upload of ${name} failed: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
}
