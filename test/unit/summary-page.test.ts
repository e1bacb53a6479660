/**
 * The test-only summary renderer must reject what GitHub would render broken, else the screenshot
 * test could pass on a summary that looks wrong on a run's page. And the README snippet reader
 * must find exactly the marked blocks.
 */
import { describe, expect, it } from 'vitest';
import { renderSummary } from '../../src/action/summary.js';
import type { BuildResult } from '../../src/build-result.js';
import { parseSnippets } from '../support/readme-snippets.js';
import { checkTags, htmlBlocks, summaryPage } from '../support/summary-page.js';

const failing: BuildResult = {
  name: 'gophermoon',
  outDir: '/w/out',
  image: '/w/out/gophermoon.squashfs',
  imageSha256: 'c'.repeat(64),
  imageBytes: 300_000,
  dataTemplate: '/w/out/gophermoon-data.tar.gz',
  dataTemplateSha256: 'd'.repeat(64),
  manifest: '/w/out/gophermoon.manifest.json',
  failureReport: '/w/out/gophermoon.build-failed.txt',
  bundleDir: '/w/out/deploy',
  traceReport: '/w/out/gophermoon.trace.json',
  bytesBefore: 400_000,
  bytesAfter: 390_000,
  filesKept: 30,
  timings: [{ stage: 'verify', seconds: 3 }],
  verify: {
    ok: false,
    // A diff whose context holds an empty line: in unified diff form that is a line of one space.
    probes: [{ name: 'text-about', ok: false, bytes: 10, diff: '@@ -1,3 +1,3 @@\n a\n \n-b\n+c' }],
    hardening: [{ name: 'read-only-root', ok: true, detail: 'EROFS' }],
  },
};

describe('summary page renderer', () => {
  it('passes HTML blocks through and splits them where CommonMark does', () => {
    expect(htmlBlocks('<h2>x</h2>\n<table>\n<tr><td>1</td></tr>\n</table>\n\n<p>y</p>\n')).toEqual([
      '<h2>x</h2>\n<table>\n<tr><td>1</td></tr>\n</table>',
      '<p>y</p>',
    ]);
    // A <pre> block runs to its end, blank lines included.
    expect(htmlBlocks('<pre>a\n\nb</pre>\n')).toEqual(['<pre>a\n\nb</pre>']);
  });

  it('refuses text GitHub would read as markdown, like a <pre> cut by a blank line', () => {
    expect(() => htmlBlocks('<h3>x</h3>\n<pre>a\n \nb</pre>\n')).toThrow(
      /line 4 is not inside an HTML block/,
    );
    expect(() => htmlBlocks('**bold**\n')).toThrow(/line 1 is not inside an HTML block/);
  });

  it("refuses tags and attributes GitHub's sanitizer drops, and unbalanced tags", () => {
    expect(() => checkTags('<script>x</script>')).toThrow(/drops <script>/);
    expect(() => checkTags('<p style="x">y</p>')).toThrow(/drops style on <p>/);
    expect(() => checkTags('<details><p>x</details>')).toThrow(/closes the wrong tag/);
    expect(() => checkTags('<a href="https://example.com/x">y</a>')).not.toThrow();
  });

  it('renders a failing summary whose diff holds a blank context line', () => {
    const md = renderSummary(failing);
    expect(md).toContain('\n \n');
    expect(() => summaryPage(md, 'build')).not.toThrow();
  });
});

describe('README snippets', () => {
  it('finds each marked fenced block, and only those', () => {
    const md = [
      '<!-- snippet: one -->',
      '',
      '```yaml',
      'a: 1',
      '```',
      '```yaml',
      'unmarked: true',
      '```',
      '<!-- snippet: two -->',
      '```sh',
      'echo hi',
      '```',
    ].join('\n');
    const s = parseSnippets(md);
    expect([...s.keys()]).toEqual(['one', 'two']);
    expect(s.get('one')).toEqual({ name: 'one', lang: 'yaml', body: 'a: 1\n', line: 1 });
    expect(s.get('two')?.body).toBe('echo hi\n');
  });

  it('a marker without a block after it is an error naming the line', () => {
    expect(() => parseSnippets('text\n<!-- snippet: lost -->\nmore text\n')).toThrow(
      /README.md:2: snippet lost is not followed by a fenced block/,
    );
  });
});
