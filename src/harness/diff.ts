/**
 * A unified diff for Gopher responses. Gopher lives on CRLF and TAB, which are invisible in an
 * ordinary diff: a fixture that differs only by a missing CR or a space instead of a TAB would
 * look identical. Every line is rendered with CR, TAB and non-printable bytes spelled out, and
 * the first differing byte is named with its offset.
 */
import type { ProbeResponse } from './client.js';

/** How many unchanged lines surround each change. */
const CONTEXT = 3;
/** Above this many cells (lines × lines) the LCS table is too big; the middle is shown whole. */
const MAX_LCS_CELLS = 4_000_000;

/**
 * Bytes as one line of ASCII: printable ASCII as is, backslash doubled, CR/TAB/LF as `\r` `\t`
 * `\n`, every other byte as `\xNN` (bytes ≥ 0x80 too: the comparison is of bytes, not text).
 */
export function visible(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) {
    if (b === 0x5c) out += '\\\\';
    else if (b === 0x0d) out += '\\r';
    else if (b === 0x09) out += '\\t';
    else if (b === 0x0a) out += '\\n';
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return out;
}

interface Line {
  /** The line's bytes without its LF (a CR stays, so CRLF and LF lines differ visibly). */
  bytes: Buffer;
  /** False only for a last line with no LF. */
  newline: boolean;
  key: string;
}

/** Splits at LF; the CR of a CRLF stays part of the line so it shows as `\r`. */
export function splitLines(buf: Buffer): Line[] {
  const lines: Line[] = [];
  let start = 0;
  while (start < buf.length) {
    const lf = buf.indexOf(0x0a, start);
    const end = lf === -1 ? buf.length : lf;
    const bytes = buf.subarray(start, end);
    const newline = lf !== -1;
    lines.push({ bytes, newline, key: `${newline ? 'n' : 'e'}${bytes.toString('latin1')}` });
    start = end + 1;
  }
  return lines;
}

/** Offset of the first byte where a and b differ, or -1 when equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

type Op = { kind: ' ' | '-' | '+'; line: Line };

/** Line edit script: common prefix and suffix trimmed, LCS on what is left. */
function editScript(a: Line[], b: Line[]): Op[] {
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre]!.key === b[pre]!.key) pre++;
  let suf = 0;
  while (
    suf < a.length - pre &&
    suf < b.length - pre &&
    a[a.length - 1 - suf]!.key === b[b.length - 1 - suf]!.key
  ) {
    suf++;
  }
  const am = a.slice(pre, a.length - suf);
  const bm = b.slice(pre, b.length - suf);
  const ops: Op[] = a.slice(0, pre).map((line) => ({ kind: ' ', line }));
  if ((am.length + 1) * (bm.length + 1) > MAX_LCS_CELLS) {
    for (const line of am) ops.push({ kind: '-', line });
    for (const line of bm) ops.push({ kind: '+', line });
  } else {
    // lcs[i][j] = length of the LCS of am[i..] and bm[j..].
    const w = bm.length + 1;
    const lcs = new Uint32Array((am.length + 1) * w);
    for (let i = am.length - 1; i >= 0; i--) {
      for (let j = bm.length - 1; j >= 0; j--) {
        lcs[i * w + j] =
          am[i]!.key === bm[j]!.key
            ? lcs[(i + 1) * w + j + 1]! + 1
            : Math.max(lcs[(i + 1) * w + j]!, lcs[i * w + j + 1]!);
      }
    }
    let i = 0;
    let j = 0;
    while (i < am.length || j < bm.length) {
      if (i < am.length && j < bm.length && am[i]!.key === bm[j]!.key) {
        ops.push({ kind: ' ', line: am[i++]! });
        j++;
      } else if (
        j < bm.length &&
        (i === am.length || lcs[i * w + j + 1]! >= lcs[(i + 1) * w + j]!)
      ) {
        ops.push({ kind: '+', line: bm[j++]! });
      } else {
        ops.push({ kind: '-', line: am[i++]! });
      }
    }
    // Removals before additions within a run reads better; the LCS walk may interleave them.
    normalizeRuns(ops, pre);
  }
  for (const line of a.slice(a.length - suf)) ops.push({ kind: ' ', line });
  return ops;
}

function normalizeRuns(ops: Op[], from: number): void {
  let i = from;
  while (i < ops.length) {
    if (ops[i]!.kind === ' ') {
      i++;
      continue;
    }
    let j = i;
    while (j < ops.length && ops[j]!.kind !== ' ') j++;
    const run = ops.slice(i, j);
    const sorted = [...run.filter((o) => o.kind === '-'), ...run.filter((o) => o.kind === '+')];
    ops.splice(i, j - i, ...sorted);
    i = j;
  }
}

function renderLine(op: Op): string[] {
  const text = `${op.kind}${visible(op.line.bytes)}`;
  return op.line.newline ? [text] : [text, '\\ No newline at end of file'];
}

function range(start: number, count: number): string {
  // Unified diff convention: an empty range names the line before it.
  if (count === 0) return `${start},0`;
  return count === 1 ? `${start + 1}` : `${start + 1},${count}`;
}

/** Line and column (1-based) of a byte offset. */
function position(buf: Buffer, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < buf.length; i++) {
    if (buf[i] === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

function describeByte(buf: Buffer, offset: number): string {
  return offset < buf.length
    ? `"${visible(buf.subarray(offset, offset + 1))}" (0x${buf[offset]!.toString(16).padStart(2, '0')})`
    : 'end of data';
}

/** One sentence naming the first differing byte, e.g. `first difference at byte 17 (line 1, column 18): expected "\t" (0x09), got " " (0x20) ...`. */
export function describeFirstDifference(expected: Buffer, actual: Buffer): string | undefined {
  const at = firstDifference(expected, actual);
  if (at === -1) return undefined;
  const { line, column } = position(expected, at);
  return (
    `first difference at byte ${at} (line ${line}, column ${column}): ` +
    `expected ${describeByte(expected, at)}, got ${describeByte(actual, at)}` +
    ` (expected ${expected.length} bytes, got ${actual.length})`
  );
}

/**
 * Unified diff of expected → actual with visible control characters, headed by the first
 * differing byte; undefined when the two are byte-identical.
 */
export function visibleDiff(
  expected: Buffer,
  actual: Buffer,
  labels: { expected: string; actual: string } = { expected: 'expected', actual: 'actual' },
): string | undefined {
  const first = describeFirstDifference(expected, actual);
  if (first === undefined) return undefined;
  const ops = editScript(splitLines(expected), splitLines(actual));
  const out = [first, `--- ${labels.expected}`, `+++ ${labels.actual}`];
  // Group changes into hunks with CONTEXT lines around them.
  const changed = ops.map((o, i) => (o.kind === ' ' ? -1 : i)).filter((i) => i >= 0);
  let h = 0;
  while (h < changed.length) {
    const from = Math.max(0, changed[h]! - CONTEXT);
    let to = changed[h]!;
    while (h + 1 < changed.length && changed[h + 1]! - to <= 2 * CONTEXT) to = changed[++h]!;
    h++;
    const end = Math.min(ops.length, to + CONTEXT + 1);
    let aStart = 0;
    let bStart = 0;
    for (const o of ops.slice(0, from)) {
      if (o.kind !== '+') aStart++;
      if (o.kind !== '-') bStart++;
    }
    const hunk = ops.slice(from, end);
    const aCount = hunk.filter((o) => o.kind !== '+').length;
    const bCount = hunk.filter((o) => o.kind !== '-').length;
    out.push(`@@ -${range(aStart, aCount)} +${range(bStart, bCount)} @@`);
    for (const o of hunk) out.push(...renderLine(o));
  }
  // An excerpt, never a dump: a wrong fixture or a chatty service must not flood the log.
  const [maxLines, maxChars] = [80, 240];
  const shown = out
    .slice(0, maxLines)
    .map((l) =>
      l.length > maxChars
        ? `${l.slice(0, maxChars)}... (${l.length - maxChars} more characters)`
        : l,
    );
  if (out.length > maxLines) shown.push(`... (${out.length - maxLines} more diff lines not shown)`);
  return shown.join('\n');
}

/**
 * Two runs' bytes that should be equal (before and after pruning), in a few lines: the lengths,
 * the first differing offset and both sides from just before it. Undefined when equal.
 */
export function bytesDiff(what: string, before: Buffer, after: Buffer): string | undefined {
  const at = firstDifference(before, after);
  if (at === -1) return undefined;
  const from = Math.max(0, at - 40);
  return (
    `${what}: ${before.length} bytes before pruning, ${after.length} after; first difference at byte ${at}\n` +
    `  before: …${visible(before.subarray(from, at + 80))}\n` +
    `  after:  …${visible(after.subarray(from, at + 80))}`
  );
}

/** The difference between two runs' responses in words, or undefined when they are equal. */
export function responseDiff(
  name: string,
  before: ProbeResponse | undefined,
  after: ProbeResponse | undefined,
): string | undefined {
  if (before === undefined || after === undefined)
    return `probe '${name}': no response ${before === undefined ? 'before' : 'after'} pruning`;
  if ((before.status === undefined) !== (after.status === undefined))
    return `probe '${name}': response kinds differ`;
  if (before.status === undefined) return bytesDiff(`probe '${name}'`, before.body, after.body);
  if (before.status !== after.status)
    return `probe '${name}': HTTP status ${before.status} before pruning, ${after.status} after`;
  return bytesDiff(`probe '${name}' body`, before.body, after.body);
}
