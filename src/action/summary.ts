/**
 * The job summary: what was built, how much pruning removed, and the evidence that it works
 * (verify probes, hardening checks). renderSummary() is pure HTML so it can be tested without a
 * runner; writeSummary() appends it to $GITHUB_STEP_SUMMARY.
 */
import path from 'node:path';
import { humanBytes } from '../core/format.js';
import * as core from '@actions/core';
import type { ExposureReport } from '../deploy/exposure.js';
import type { BuildResult } from '../build-result.js';
import type { BoardVerifyReport } from '../board/verify-board.js';
import type { Logger } from '../core/logger.js';
import type { ArtifactReport } from './artifacts.js';
import type { CacheReport } from './cache.js';

/** The simulated board's result (`board: true`): a report, an error, or why it was not tried. */
export interface BoardSummary {
  ok: boolean;
  report?: BoardVerifyReport;
  error?: string;
  skipped?: string;
}

export interface SummaryExtras {
  board?: BoardSummary;
  /** Path of the config as the user gave it. */
  config?: string;
  cache?: CacheReport;
  artifacts?: ArtifactReport;
  /** The manifest lock, and whether this run rewrote it (`update-manifest: true`). */
  manifestLock?: { path: string; updated: boolean };
  /** lhc's version, shown in the footer. */
  version?: string;
  /** The runner's environment: workspace for relative paths, run URL for the artifact link. */
  env?: NodeJS.ProcessEnv;
}

/** GitHub refuses step summaries over 1 MiB; keep long texts well under it. */
export const MAX_DETAIL_CHARS = 60_000;

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Bytes in the largest unit that keeps the number at or above 1: "336.7 KiB", "812 B". */
export const formatBytes = humanBytes;

/** "8.0 MiB → 1.9 MiB (−75 %)", or "… (nothing removed)". */
function pruning(before: number, after: number): string {
  const saved = before > 0 ? Math.round((100 * (before - after)) / before) : 0;
  const tail = before - after <= 0 ? 'nothing removed' : `−${saved} %`;
  return `${formatBytes(before)} → ${formatBytes(after)} (${tail})`;
}

function mark(ok: boolean): string {
  return ok ? '✅' : '❌';
}

function clip(text: string): string {
  if (text.length <= MAX_DETAIL_CHARS) return text;
  return `${text.slice(0, MAX_DETAIL_CHARS)}\n… ${text.length - MAX_DETAIL_CHARS} more characters cut; the full text is in the artifact`;
}

function table(head: string[], rows: string[][]): string {
  const th = head.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  // Cells are already HTML (escaped by the caller where they carry text).
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('\n');
  return `<table>\n<tr>${th}</tr>\n${body}\n</table>\n`;
}

/**
 * A blank line first: after a heading or a paragraph the <pre> would otherwise continue their HTML
 * block, which ends at the first blank line, and a diff's empty context line (" ") is blank to
 * GitHub's markdown, so the rest of the diff would be rendered as markdown text.
 */
function pre(text: string): string {
  return `\n<pre>${escapeHtml(clip(text))}</pre>\n`;
}

function collapsed(summary: string, body: string): string {
  return `<details><summary>${escapeHtml(summary)}</summary>\n\n${body}\n</details>\n`;
}

function code(text: string): string {
  return `<code>${escapeHtml(text)}</code>`;
}

/** A path as the user knows it: relative to the workspace when it lies inside. */
export function displayPath(file: string, workspace: string | undefined): string {
  if (!workspace) return file;
  const ws = workspace.endsWith('/') ? workspace : `${workspace}/`;
  return file.startsWith(ws) ? file.slice(ws.length) : file;
}

function artifactLink(a: ArtifactReport, env: NodeJS.ProcessEnv): string {
  const { GITHUB_SERVER_URL: server, GITHUB_REPOSITORY: repo, GITHUB_RUN_ID: run } = env;
  if (!a.uploaded) return `${code(a.name)} not uploaded (${escapeHtml(a.skipped ?? 'skipped')})`;
  const size = a.size !== undefined ? `, ${formatBytes(a.size)}` : '';
  const label = `${escapeHtml(a.name)}</a> (${a.files} files${size})`;
  if (server && repo && run && a.id !== undefined)
    return `<a href="${escapeHtml(`${server}/${repo}/actions/runs/${run}/artifacts/${a.id}`)}">${label}`;
  return `${code(a.name)} (${a.files} files${size})`;
}

/** Text (a diff names its fixture by absolute path) with the workspace prefix removed. */
function relativeText(text: string, workspace: string | undefined): string {
  if (!workspace) return text;
  const ws = workspace.endsWith('/') ? workspace : `${workspace}/`;
  return text.split(ws).join('');
}

/** A number with its unit that never wraps between the two in a narrow table cell. */
function bytesCell(n: number): string {
  return formatBytes(n).replace(' ', '\u00a0');
}

/** The probe and hardening rows of a verify, local or on the board. */
interface CheckedRows {
  probes: readonly { name: string; ok: boolean; diff?: string }[];
  hardening: readonly { name: string; ok: boolean; detail: string }[];
}

/** "✅ 26/26 probes, 9/9 hardening". */
function countsCell(ok: boolean, r: CheckedRows): string {
  const probes = r.probes.filter((p) => p.ok).length;
  const hard = r.hardening.filter((c) => c.ok).length;
  return `${mark(ok)} ${probes}/${r.probes.length} probes, ${hard}/${r.hardening.length} hardening`;
}

/** Each failing probe with its diff, then the failing hardening checks; `where` names the place. */
function failedRows(r: CheckedRows, where: string, workspace: string | undefined): string[] {
  const parts: string[] = [];
  for (const p of r.probes.filter((x) => !x.ok)) {
    parts.push(
      `<h3>❌ ${where ? `${where}, ` : ''}probe ${code(p.name)} differs from its fixture</h3>\n`,
    );
    if (p.diff) parts.push(pre(relativeText(p.diff, workspace)));
  }
  const hard = r.hardening.filter((c) => !c.ok);
  if (hard.length > 0)
    parts.push(
      `<h3>❌ hardening checks failed${where ? ` ${where}` : ''}</h3>\n`,
      table(
        ['check', 'detail'],
        hard.map((c) => [code(c.name), escapeHtml(c.detail)]),
      ),
    );
  return parts;
}

function verifyCell(r: BuildResult): string {
  return r.verify ? countsCell(r.verify.ok, r.verify) : 'not run';
}

function boardCell(b: BoardSummary): string {
  if (b.skipped) return `not run (${escapeHtml(b.skipped)})`;
  if (!b.report) return mark(false);
  return countsCell(b.ok, b.report);
}

function boardFailures(b: BoardSummary | undefined, workspace: string | undefined): string[] {
  if (!b || b.skipped || b.ok) return [];
  if (!b.report) return ['<h3>❌ board verify did not complete</h3>\n', pre(b.error ?? '')];
  const parts = failedRows(b.report, 'on the board', workspace);
  if (b.report.journal)
    parts.push(collapsed('journal of the units on the board', pre(b.report.journal)));
  return parts;
}

/** What failed, in the order a reader should fix it; empty when everything passed. */
function failures(r: BuildResult, extras: SummaryExtras): string[] {
  const parts: string[] = [];
  if (r.failureReport)
    parts.push(
      `<p>No <code>SHA256SUMS</code> was written, so this output cannot be installed; what failed is also in ${code(displayPath(r.failureReport, extras.env?.GITHUB_WORKSPACE))}.</p>\n`,
    );
  if (r.manifestDiff && !extras.manifestLock?.updated) {
    const lock = extras.manifestLock
      ? ` ${code(displayPath(extras.manifestLock.path, extras.env?.GITHUB_WORKSPACE))}`
      : '';
    parts.push(
      `<h3>❌ The manifest differs from the lock${lock}</h3>\n`,
      pre(r.manifestDiff),
      '<p>If the change is intended, run the workflow once with the <code>update-manifest: true</code> input and commit the lock it writes.</p>\n',
    );
  }
  const ws = extras.env?.GITHUB_WORKSPACE;
  if (r.verify) parts.push(...failedRows(r.verify, '', ws));
  parts.push(...boardFailures(extras.board, ws));
  return parts;
}

/** systemd-analyze security's score per service unit, folded: the sandbox as systemd sees it. */
export function exposureSection(e: ExposureReport): string {
  const worst = Math.max(...e.units.map((u) => u.score));
  return collapsed(
    `exposure (systemd-analyze security, runtime ${e.runtime}): ${worst.toFixed(1)}${e.runtime === 'nspawn' ? ' (systemd-analyze cannot see the confinement nspawn sets up; see deploy/README.md)' : ''}`,
    table(
      ['unit', 'score', 'level'],
      e.units.map((u) => [code(u.unit), u.score.toFixed(1), escapeHtml(u.level)]),
    ),
  );
}

/** The whole summary for one build, as HTML/markdown GitHub renders: failures first, passes folded. */
export function renderSummary(result: BuildResult, extras: SummaryExtras = {}): string {
  const env = extras.env ?? {};
  const ws = env.GITHUB_WORKSPACE;
  const failed = failures(result, extras);
  const parts: string[] = [];
  parts.push(
    `<h2>lhc: ${escapeHtml(result.name)} ${failed.length > 0 ? '❌ failed' : '✅ passed'}</h2>\n`,
  );
  const board = extras.board;
  parts.push(
    table(
      [
        'image',
        'result',
        'size',
        'sha256',
        'files kept',
        'pruned',
        'verify',
        ...(board ? ['board'] : []),
      ],
      [
        [
          // The file name only: its path is under "files" below, and a long path squeezes the row.
          code(path.basename(result.image)),
          mark(failed.length === 0),
          bytesCell(result.imageBytes),
          code(result.imageSha256.slice(0, 12)),
          String(result.filesKept),
          pruning(result.bytesBefore, result.bytesAfter),
          verifyCell(result),
          ...(board ? [boardCell(board)] : []),
        ],
      ],
    ),
  );
  parts.push(...failed);

  if (result.manifestDiff && extras.manifestLock?.updated)
    parts.push(
      collapsed(
        `manifest lock ${displayPath(extras.manifestLock.path, ws)} updated: commit it`,
        pre(result.manifestDiff),
      ),
    );
  const v = result.verify;
  const passedProbes = v?.probes.filter((p) => p.ok) ?? [];
  if (passedProbes.length > 0)
    parts.push(
      collapsed(
        `${passedProbes.length} probe${passedProbes.length === 1 ? '' : 's'} matched their fixtures`,
        table(
          ['probe', 'bytes'],
          passedProbes.map((p) => [code(p.name), String(p.bytes)]),
        ),
      ),
    );
  const passedChecks = v?.hardening.filter((c) => c.ok) ?? [];
  if (passedChecks.length > 0)
    parts.push(
      collapsed(
        `${passedChecks.length} hardening check${passedChecks.length === 1 ? '' : 's'} passed`,
        table(
          ['check', 'detail'],
          passedChecks.map((c) => [code(c.name), escapeHtml(c.detail)]),
        ),
      ),
    );
  if (result.exposure) parts.push(exposureSection(result.exposure));
  if (v?.load) {
    const l = v.load;
    parts.push(
      collapsed(
        `load: ${l.requests} requests at concurrency ${l.concurrency}, p50 ${l.p50ms} ms, ${l.failures} failed`,
        table(
          ['requests', 'concurrency', 'failures', 'p50 ms', 'p95 ms', 'p99 ms'],
          [[l.requests, l.concurrency, l.failures, l.p50ms, l.p95ms, l.p99ms].map(String)],
        ),
      ),
    );
  }
  const files: string[][] = [
    ['image', code(displayPath(result.image, ws)), code(result.imageSha256)],
    ['data template', code(displayPath(result.dataTemplate, ws)), code(result.dataTemplateSha256)],
    ['manifest', code(displayPath(result.manifest, ws)), ''],
  ];
  const timings =
    result.timings.length > 0
      ? table(
          ['stage', 'seconds'],
          result.timings.map((t) => [escapeHtml(t.stage), t.seconds.toFixed(1)]),
        )
      : '';
  const total = result.timings.reduce((sum, t) => sum + t.seconds, 0);
  parts.push(
    collapsed(
      `files and stage timings (${total.toFixed(1)} s)`,
      table(['output', 'path', 'sha256'], files) + timings,
    ),
  );

  const notes: string[] = [];
  if (extras.config) notes.push(`config ${code(displayPath(extras.config, ws))}`);
  if (extras.artifacts) notes.push(`artifact ${artifactLink(extras.artifacts, env)}`);
  const c = extras.cache;
  if (c) {
    if (!c.enabled) notes.push('cache not used');
    const hits = (['store', 'lua'] as const)
      .filter((w) => c[w])
      .map((w) => `${w} ${c[w]!.restored ? 'hit' : 'miss'}`);
    if (hits.length > 0) notes.push(`cache: ${hits.join(', ')}`);
  }
  if (extras.version) notes.push(`lhc ${escapeHtml(extras.version)}`);
  if (notes.length > 0) parts.push(`<p>${notes.join(' · ')}</p>\n`);
  return parts.join('');
}

/**
 * Appends the summary to $GITHUB_STEP_SUMMARY. Without one (a local run) it only logs that; a
 * summary that cannot be written is a warning, because the build itself succeeded.
 */
export async function writeSummary(
  result: BuildResult,
  extras: SummaryExtras = {},
  logger?: Logger,
): Promise<boolean> {
  if (!process.env.GITHUB_STEP_SUMMARY) {
    logger?.debug('summary: GITHUB_STEP_SUMMARY is not set, no job summary written');
    return false;
  }
  try {
    await core.summary.addRaw(renderSummary(result, extras)).write();
    return true;
  } catch (e) {
    core.summary.emptyBuffer();
    const msg = `summary: could not write the job summary: ${e instanceof Error ? e.message : String(e)}`;
    if (logger) logger.warn(msg);
    else core.warning(msg);
    return false;
  }
}
