import { describe, expect, it } from 'vitest';
import {
  describeFirstDifference,
  firstDifference,
  splitLines,
  visible,
  visibleDiff,
} from '../../src/harness/diff.js';

const b = (s: string) => Buffer.from(s, 'latin1');

describe('visible', () => {
  it('spells out CR, TAB, LF, backslash and non-printable bytes', () => {
    expect(visible(b('a\tb\r\n'))).toBe('a\\tb\\r\\n');
    expect(visible(b('\x00\x1b\x7f\xff'))).toBe('\\x00\\x1b\\x7f\\xff');
    // A literal backslash-t in the data must not look like a TAB.
    expect(visible(b('\\t'))).toBe('\\\\t');
  });
});

describe('splitLines', () => {
  it('keeps the CR of CRLF in the line and marks a last line without LF', () => {
    const lines = splitLines(b('one\r\ntwo\nthree'));
    expect(lines.map((l) => visible(l.bytes))).toEqual(['one\\r', 'two', 'three']);
    expect(lines.map((l) => l.newline)).toEqual([true, true, false]);
  });
});

describe('firstDifference', () => {
  it('finds the first differing byte, the shorter length when one is a prefix, -1 when equal', () => {
    expect(firstDifference(b('abc'), b('abd'))).toBe(2);
    expect(firstDifference(b('abc'), b('ab'))).toBe(2);
    expect(firstDifference(b('abc'), b('abc'))).toBe(-1);
  });
});

describe('visibleDiff', () => {
  const menu =
    'iWelcome\tfake\t(NULL)\t0\r\n0About\t/about.txt\tlocalhost\t70\r\n1Moon\t/moon\tlocalhost\t70\r\n.\r\n';

  it('is undefined for identical bytes', () => {
    expect(visibleDiff(b(menu), b(menu))).toBeUndefined();
  });

  it('shows a TAB turned into a space, with the byte offset, line and column', () => {
    const got = menu.replace('0About\t', '0About ');
    const diff = visibleDiff(b(menu), b(got), {
      expected: 'fixture root.gopher',
      actual: 'response',
    })!;
    const at = menu.indexOf('0About\t') + 6;
    expect(diff.split('\n')[0]).toBe(
      `first difference at byte ${at} (line 2, column 7): expected "\\t" (0x09), got " " (0x20) (expected ${menu.length} bytes, got ${got.length})`,
    );
    expect(diff).toContain('--- fixture root.gopher\n+++ response\n@@ -1,4 +1,4 @@\n');
    expect(diff).toContain(
      ' iWelcome\\tfake\\t(NULL)\\t0\\r\n-0About\\t/about.txt\\tlocalhost\\t70\\r\n+0About /about.txt\\tlocalhost\\t70\\r\n',
    );
  });

  it('makes a missing CR visible (LF-only line ends)', () => {
    const got = menu.replace('\t70\r\n.', '\t70\n.');
    const diff = visibleDiff(b(menu), b(got))!;
    expect(diff).toContain('-1Moon\\t/moon\\tlocalhost\\t70\\r\n+1Moon\\t/moon\\tlocalhost\\t70\n');
    expect(diff).toMatch(/expected "\\r" \(0x0d\), got "\\n" \(0x0a\)/);
  });

  it('reports a truncated response and a missing final newline', () => {
    const diff = visibleDiff(b('a\r\nb\r\n.\r\n'), b('a\r\nb'))!;
    expect(diff).toContain('got end of data');
    expect(diff).toContain('-b\\r\n-.\\r\n+b\n\\ No newline at end of file');
  });

  it('keeps hunks to the changed region with three lines of context', () => {
    const lines = Array.from({ length: 40 }, (_, i) => `line ${i}\r\n`);
    const expected = lines.join('');
    const got = lines.map((l, i) => (i === 20 ? 'line twenty\r\n' : l)).join('');
    const diff = visibleDiff(b(expected), b(got))!;
    expect(diff).toContain('@@ -18,7 +18,7 @@');
    expect(diff).not.toContain('line 16');
    expect(diff).not.toContain('line 24');
    expect(diff.split('\n').filter((l) => l.startsWith('-') && !l.startsWith('---'))).toEqual([
      '-line 20\\r',
    ]);
  });

  it('shows inserted and removed lines as such', () => {
    const diff = visibleDiff(b('a\nb\nc\n'), b('a\nx\nb\n'))!;
    expect(diff).toContain('@@ -1,3 +1,3 @@\n a\n+x\n b\n-c');
  });

  it('names binary bytes by value', () => {
    const first = describeFirstDifference(
      Buffer.from([0x89, 0x50, 0x00]),
      Buffer.from([0x89, 0x50, 0x01]),
    )!;
    expect(first).toContain(
      'byte 2 (line 1, column 3): expected "\\x00" (0x00), got "\\x01" (0x01)',
    );
  });
});
