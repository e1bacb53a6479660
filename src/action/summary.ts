/**
 * The job summary: what was built, how much pruning removed, and the evidence that it works
 * (verify probes, hardening checks). renderSummary() is pure HTML so it can be tested without a
 * runner; writeSummary() appends it to $GITHUB_STEP_SUMMARY.
 */
import { humanBytes } from '../core/format.js';
import * as core from '@actions/core';
import type { BuildResult, HardeningCheck, ProbeOutcome } from '../build-result.js';
import type { Logger } from '../core/logger.js';
import type { ArtifactReport } from './artifacts.js';
import type { CacheReport } from './cache.js';

export interface SummaryExtras {
  /** Path of the config as the user gave it. */
  config?: string;
  cache?: CacheReport;
  artifacts?: ArtifactReport;
}

/** GitHub refuses step summaries over 1 MiB; keep long texts well under it. */
export const MAX_DETAIL_CHARS = 60_000;

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** "1234567 B (1.2 MiB)": exact bytes for diffing runs, rounded unit for reading. */
export function formatBytes(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : `${bytes} B (${humanBytes(bytes)})`;
}

function pct(after: number, before: number): string {
  if (before <= 0) return '';
  return ` (${((100 * (before - after)) / before).toFixed(1)} % removed)`;
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

function details(summary: string, body: string, open = false): string {
  return `<details${open ? ' open' : ''}><summary>${escapeHtml(summary)}</summary>\n\n<pre>${escapeHtml(clip(body))}</pre>\n\n</details>\n`;
}

function code(text: string): string {
  return `<code>${escapeHtml(text)}</code>`;
}

function imageTable(r: BuildResult): string {
  return table(
    ['', 'value'],
    [
      ['files kept', String(r.filesKept)],
      ['bytes before pruning', formatBytes(r.bytesBefore)],
      ['bytes after pruning', formatBytes(r.bytesAfter) + pct(r.bytesAfter, r.bytesBefore)],
      ['image size', formatBytes(r.imageBytes)],
      ['image', code(r.image)],
      ['image sha256', code(r.imageSha256)],
      ['data template', code(r.dataTemplate)],
      ['data template sha256', code(r.dataTemplateSha256)],
    ],
  );
}

function probeRows(probes: ProbeOutcome[]): string {
  return table(
    ['probe', 'result', 'bytes'],
    probes.map((p) => [
      code(p.name),
      `${mark(p.ok)} ${p.ok ? 'matches fixture' : 'differs'}`,
      String(p.bytes),
    ]),
  );
}

function hardeningRows(checks: HardeningCheck[]): string {
  return table(
    ['check', 'result', 'detail'],
    checks.map((c) => [
      code(c.name),
      `${mark(c.ok)} ${c.ok ? 'ok' : 'failed'}`,
      escapeHtml(c.detail),
    ]),
  );
}

/** The whole summary for one build, as HTML/markdown GitHub renders. */
export function renderSummary(result: BuildResult, extras: SummaryExtras = {}): string {
  const parts: string[] = [];
  const verified = result.verify ? (result.verify.ok ? ' ✅' : ' ❌') : '';
  parts.push(`<h2>lhc: ${escapeHtml(result.name)}${verified}</h2>\n`);
  if (extras.config) parts.push(`<p>config ${code(extras.config)}</p>\n`);

  parts.push(`<h3>Image</h3>\n`, imageTable(result));

  if (result.manifestDiff) {
    parts.push(
      `<h3>Manifest changed</h3>\n`,
      details('manifest diff against the lock', result.manifestDiff, true),
    );
  }

  const v = result.verify;
  if (v) {
    parts.push(`<h3>Verify probes</h3>\n`, probeRows(v.probes));
    for (const p of v.probes.filter((p) => !p.ok && p.diff)) {
      parts.push(details(`diff of probe ${p.name}`, p.diff!, true));
    }
    parts.push(`<h3>Hardening checks</h3>\n`, hardeningRows(v.hardening));
    if (v.load) {
      const l = v.load;
      parts.push(
        `<h3>Load</h3>\n`,
        table(
          ['requests', 'concurrency', 'failures', 'p50 ms', 'p95 ms', 'p99 ms'],
          [[l.requests, l.concurrency, l.failures, l.p50ms, l.p95ms, l.p99ms].map(String)],
        ),
      );
    }
  } else {
    parts.push(`<p>verify was not run</p>\n`);
  }

  if (result.timings.length > 0) {
    const total = result.timings.reduce((s, t) => s + t.seconds, 0);
    parts.push(
      `<details><summary>stage timings (${total.toFixed(1)} s)</summary>\n\n`,
      table(
        ['stage', 'seconds'],
        result.timings.map((t) => [escapeHtml(t.stage), t.seconds.toFixed(1)]),
      ),
      `\n</details>\n`,
    );
  }

  const notes: string[] = [];
  const c = extras.cache;
  if (c) {
    if (!c.enabled) notes.push('cache: not used');
    for (const which of ['store', 'lua'] as const) {
      const o = c[which];
      if (o) notes.push(`cache ${which}: ${o.restored ? 'hit' : 'miss'} (${code(o.key)})`);
    }
  }
  const a = extras.artifacts;
  if (a) {
    notes.push(
      a.uploaded
        ? `artifact ${code(a.name)}: ${a.files} files uploaded${a.size !== undefined ? `, ${formatBytes(a.size)}` : ''}`
        : `artifact ${code(a.name)}: not uploaded (${escapeHtml(a.skipped ?? 'skipped')})`,
    );
  }
  if (notes.length > 0)
    parts.push(`<ul>\n${notes.map((n) => `<li>${n}</li>`).join('\n')}\n</ul>\n`);
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
