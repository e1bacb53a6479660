/**
 * The prune report: what was kept and why, what was dropped, and what the trace noticed. It is
 * an artifact under SHA256SUMS, so it holds nothing that varies between runs or hosts (no
 * timings, no "emulated"); those go to the log.
 */
import { humanBytes } from '../core/format.js';
import type { EntryKind } from '../root/lookup.js';
import type { TraceResult } from '../stages/trace.js';
import { entryBytes, type Closure, type KeepReason, type WalkEntry } from './closure.js';

export interface KeptEntry {
  path: string;
  kind: EntryKind;
  /** Octal permission bits, e.g. "0755". */
  mode: string;
  bytes: number;
  why: KeepReason[];
}

export interface PruneReport {
  name: string;
  base: { entries: number; bytes: number };
  kept: { entries: number; bytes: number; list: KeptEntry[] };
  dropped: { entries: number; bytes: number };
  /** Paths the service looked up and did not find (ENOENT): a hint when the image misbehaves. */
  failedLookups: string[];
  writtenUnderData: string[];
  writtenOutsideData: string[];
  /** DT_NEEDED names no library dir of the root provides. */
  missingLibraries: { elf: string; needed: string }[];
  /** Entries the trace or closure wanted but a `drop` pattern removed. */
  droppedByConfig: string[];
}

export function buildReport(
  name: string,
  all: Map<string, WalkEntry>,
  list: KeptEntry[],
  closure: Closure,
  trace: TraceResult,
): PruneReport {
  let baseBytes = 0;
  for (const e of all.values()) baseBytes += entryBytes(e);
  const keptPaths = new Set(list.map((k) => k.path));
  let droppedEntries = 0;
  let droppedBytes = 0;
  for (const [p, e] of all) {
    if (p === '/' || keptPaths.has(p)) continue;
    droppedEntries++;
    droppedBytes += entryBytes(e);
  }
  const keptBytes = list.reduce((s, k) => s + k.bytes, 0);
  return {
    name,
    base: { entries: all.size - 1, bytes: baseBytes },
    kept: { entries: list.length, bytes: keptBytes, list },
    dropped: { entries: droppedEntries, bytes: droppedBytes },
    failedLookups: trace.failedLookups,
    writtenUnderData: trace.writtenUnderData,
    writtenOutsideData: trace.writtenOutsideData,
    missingLibraries: closure.missingLibraries,
    droppedByConfig: closure.droppedByConfig,
  };
}

/** A few lines for a terminal or a job summary. */
export function summarizeReport(r: PruneReport): string {
  const pct = r.base.bytes > 0 ? ((100 * r.kept.bytes) / r.base.bytes).toFixed(1) : '0';
  const byReason = new Map<string, number>();
  for (const k of r.kept.list) for (const w of k.why) byReason.set(w, (byReason.get(w) ?? 0) + 1);
  const lines = [
    `pruned ${r.name}: kept ${r.kept.entries} of ${r.base.entries} entries, ${humanBytes(r.kept.bytes)} of ${humanBytes(r.base.bytes)} (${pct} %); dropped ${r.dropped.entries} entries, ${humanBytes(r.dropped.bytes)}`,
    `kept because: ${[...byReason]
      .sort()
      .map(([w, n]) => `${w} ${n}`)
      .join(', ')}`,
    `trace: ${r.failedLookups.length} failed lookup(s), ${r.writtenUnderData.length} path(s) written under the data path`,
  ];
  if (r.writtenOutsideData.length > 0)
    lines.push(
      `written outside the data path (read-only on the board): ${r.writtenOutsideData.join(', ')}`,
    );
  if (r.missingLibraries.length > 0)
    lines.push(
      `missing libraries: ${r.missingLibraries.map((m) => `${m.needed} (for ${m.elf})`).join(', ')}`,
    );
  return lines.join('\n');
}

/** The report file's text (stable key order, the summary included); the outputs stage writes it. */
export function formatPruneReport(report: PruneReport): string {
  return `${JSON.stringify({ ...report, summary: summarizeReport(report) }, null, 2)}\n`;
}
