/**
 * Manifest comparison: what `lhc diff OLD NEW` prints and what `lhc build --manifest-lock` fails
 * with. One line per path that differs, sorted, so the text itself is stable enough to paste
 * into a review.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { checkOutputFileTarget } from '../core/build-dirs.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { writeOutputFile } from '../core/safe-write.js';
import {
  KEY_ORDER,
  comparePaths,
  parseManifest,
  serializeManifest,
  type Manifest,
  type ManifestEntry,
} from './manifest.js';

export type Section = 'image' | 'data';

export interface EntryRef {
  section: Section;
  entry: ManifestEntry;
}

export interface EntryChange {
  section: Section;
  path: string;
  before: ManifestEntry;
  after: ManifestEntry;
  /** Names of the fields that differ, in manifest key order. */
  fields: (keyof ManifestEntry)[];
}

export interface ManifestDiff {
  added: EntryRef[];
  removed: EntryRef[];
  changed: EntryChange[];
  /** Top-level differences (name, data path). */
  meta: string[];
  equal: boolean;
}

/** Every field but the path, in manifest key order. */
const FIELDS = KEY_ORDER.filter((k) => k !== 'path');

function byPath(entries: readonly ManifestEntry[]): Map<string, ManifestEntry> {
  return new Map(entries.map((e) => [e.path, e]));
}

function diffSection(
  section: Section,
  a: readonly ManifestEntry[],
  b: readonly ManifestEntry[],
  d: ManifestDiff,
): void {
  const before = byPath(a);
  const after = byPath(b);
  for (const [p, e] of before) if (!after.has(p)) d.removed.push({ section, entry: e });
  for (const [p, e] of after) {
    const old = before.get(p);
    if (!old) {
      d.added.push({ section, entry: e });
      continue;
    }
    const fields = FIELDS.filter((f) => old[f] !== e[f]);
    if (fields.length > 0) d.changed.push({ section, path: p, before: old, after: e, fields });
  }
}

export function diffManifests(a: Manifest, b: Manifest): ManifestDiff {
  const d: ManifestDiff = { added: [], removed: [], changed: [], meta: [], equal: true };
  if (a.name !== b.name) d.meta.push(`name: ${a.name} → ${b.name}`);
  if (a.data.path !== b.data.path) d.meta.push(`data path: ${a.data.path} → ${b.data.path}`);
  diffSection('image', a.image, b.image, d);
  diffSection('data', a.data.entries, b.data.entries, d);
  const order = (x: { section: Section; path: string }, y: { section: Section; path: string }) =>
    x.section === y.section ? comparePaths(x.path, y.path) : x.section === 'image' ? -1 : 1;
  const ref = (r: EntryRef) => ({ section: r.section, path: r.entry.path });
  d.added.sort((x, y) => order(ref(x), ref(y)));
  d.removed.sort((x, y) => order(ref(x), ref(y)));
  d.changed.sort(order);
  d.equal =
    d.meta.length === 0 && d.added.length === 0 && d.removed.length === 0 && d.changed.length === 0;
  return d;
}

function describe(e: ManifestEntry): string {
  const parts = [e.type, e.mode, `${e.uid}:${e.gid}`];
  if (e.size !== undefined) parts.push(`${e.size} bytes`);
  if (e.target !== undefined) parts.push(`-> ${e.target}`);
  if (e.device !== undefined) parts.push(`device ${e.device}`);
  return parts.join(' ');
}

function signed(n: number): string {
  return n > 0 ? `+${n}` : String(n);
}

function describeChange(c: EntryChange): string {
  const out: string[] = [];
  for (const f of c.fields) {
    const a = c.before[f];
    const b = c.after[f];
    if (f === 'size')
      out.push(
        `size ${a ?? '-'} → ${b ?? '-'}${typeof a === 'number' && typeof b === 'number' ? ` (${signed(b - a)})` : ''}`,
      );
    else if (f === 'sha256') {
      // Same size, new bytes: say so without two 64-character digests.
      out.push(`content ${String(a ?? '-').slice(0, 12)} → ${String(b ?? '-').slice(0, 12)}`);
    } else out.push(`${f} ${a ?? '-'} → ${b ?? '-'}`);
  }
  return out.join(', ');
}

/** Readable diff: `+` added, `-` removed, `~` changed, one path a line, then a summary line. */
export function formatDiff(d: ManifestDiff, labels: { old?: string; new?: string } = {}): string {
  const lines: string[] = [];
  if (labels.old || labels.new)
    lines.push(`--- ${labels.old ?? 'old'}`, `+++ ${labels.new ?? 'new'}`);
  for (const m of d.meta) lines.push(`~ ${m}`);
  type Row = { section: Section; path: string; text: string };
  const rows: Row[] = [
    ...d.removed.map((r) => ({
      section: r.section,
      path: r.entry.path,
      text: `- ${r.section.padEnd(5)} ${r.entry.path}  ${describe(r.entry)}`,
    })),
    ...d.added.map((r) => ({
      section: r.section,
      path: r.entry.path,
      text: `+ ${r.section.padEnd(5)} ${r.entry.path}  ${describe(r.entry)}`,
    })),
    ...d.changed.map((c) => ({
      section: c.section,
      path: c.path,
      text: `~ ${c.section.padEnd(5)} ${c.path}  ${describeChange(c)}`,
    })),
  ];
  rows.sort((x, y) =>
    x.section === y.section ? comparePaths(x.path, y.path) : x.section === 'image' ? -1 : 1,
  );
  lines.push(...rows.map((r) => r.text));
  if (d.equal) lines.push('manifests are identical');
  else {
    const n = d.added.length + d.removed.length + d.changed.length;
    lines.push(
      `${n} ${n === 1 ? 'path differs' : 'paths differ'}: ${d.added.length} added, ${d.removed.length} removed, ${d.changed.length} changed`,
    );
  }
  return lines.join('\n') + '\n';
}

export async function readManifest(file: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(
      `cannot read manifest ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    );
  }
  return parseManifest(text, file);
}

export interface LockCheck {
  /** True when the lock differed from (or did not exist before) the new manifest. */
  changed: boolean;
  /** True when the lock file was (re)written with the new manifest (`update` and changed). */
  updated: boolean;
  /** The diff (lock → new), empty when unchanged. */
  diffText: string;
}

/**
 * Compares a freshly built manifest with a committed lock. A missing or different lock is a
 * result (`changed`, with the diff), not an exception, so that the build can still verify and
 * report everything in one run; the shells fail it and name their own way to update. With
 * `update`, the lock is rewritten.
 */
/** The lock is written like an artifact: staged beside it, renamed over it, never through a symlink. */
async function writeLock(lockFile: string, m: Manifest, logger?: Logger): Promise<void> {
  const abs = await checkOutputFileTarget('--manifest-lock', lockFile);
  await writeOutputFile(abs, serializeManifest(m), { logger });
}

export async function checkManifestLock(
  newManifest: Manifest,
  lockFile: string,
  update: boolean,
  logger?: Logger,
): Promise<LockCheck> {
  const counts = `${newManifest.image.length} image paths, ${newManifest.data.entries.length} data paths`;
  if (!existsSync(lockFile)) {
    if (!update)
      return {
        changed: true,
        updated: false,
        diffText: `manifest lock ${lockFile} does not exist (the built manifest has ${counts})
`,
      };
    await writeLock(lockFile, newManifest, logger);
    return {
      changed: true,
      updated: true,
      diffText: `created manifest lock ${lockFile} (${counts})
`,
    };
  }
  const lock = await readManifest(lockFile);
  const d = diffManifests(lock, newManifest);
  if (d.equal) return { changed: false, updated: false, diffText: '' };
  const diffText = formatDiff(d, { old: lockFile, new: 'this build' });
  if (update) await writeLock(lockFile, newManifest, logger);
  return { changed: true, updated: update, diffText };
}
