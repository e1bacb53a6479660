import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import {
  MAX_DETAIL_CHARS,
  escapeHtml,
  formatBytes,
  renderSummary,
  writeSummary,
} from '../../src/action/summary.js';
import { memoryLogger } from '../../src/core/logger.js';

function result(over: Partial<BuildResult> = {}): BuildResult {
  return {
    name: 'gophermoon',
    outDir: '/tmp/out',
    image: '/tmp/out/gophermoon.squashfs',
    imageSha256: 'a'.repeat(64),
    imageBytes: 409_600,
    dataTemplate: '/tmp/out/gophermoon-data.tar',
    dataTemplateSha256: 'b'.repeat(64),
    manifest: '/tmp/out/gophermoon.manifest',
    sha256sums: '/tmp/out/SHA256SUMS',
    bundleDir: '/tmp/out/bundle',
    traceReport: '/tmp/out/trace.json',
    bytesBefore: 8_000_000,
    bytesAfter: 2_000_000,
    filesKept: 17,
    timings: [
      { stage: 'fetch', seconds: 0.2 },
      { stage: 'lua', seconds: 8.4 },
    ],
    verify: {
      ok: true,
      probes: [
        { name: 'root-menu', ok: true, bytes: 512 },
        { name: 'about', ok: true, bytes: 128 },
      ],
      hardening: [
        { name: 'read-only-root', ok: true, detail: 'write to / failed with EROFS' },
        { name: 'noexec-data', ok: true, detail: 'exec in /data: Permission denied' },
        { name: 'no-shell', ok: true, detail: '/bin/sh absent' },
      ],
    },
    ...over,
  };
}

/** Rows of the first <table> after the heading `title`, as arrays of cell HTML. */
function tableAfter(html: string, title: string): string[][] {
  const at = html.indexOf(`<h3>${title}</h3>`);
  expect(at, `heading ${title}`).toBeGreaterThanOrEqual(0);
  const start = html.indexOf('<table>', at);
  const end = html.indexOf('</table>', start);
  const rows = html.slice(start, end).match(/<tr>.*?<\/tr>/g) ?? [];
  return rows.slice(1).map((r) => [...r.matchAll(/<td>(.*?)<\/td>/g)].map((m) => m[1]!));
}

describe('renderSummary', () => {
  it('has an image table with files kept, bytes before/after, image size and sha256', () => {
    const r = result();
    const rows = tableAfter(renderSummary(r), 'Image');
    const byLabel = new Map(rows.map(([k, v]) => [k, v]));
    expect(byLabel.get('files kept')).toBe(String(r.filesKept));
    expect(byLabel.get('bytes before pruning')).toBe(formatBytes(r.bytesBefore));
    expect(byLabel.get('bytes after pruning')).toContain(formatBytes(r.bytesAfter));
    expect(byLabel.get('bytes after pruning')).toContain('75.0 % removed');
    expect(byLabel.get('image size')).toBe(formatBytes(r.imageBytes));
    expect(byLabel.get('image sha256')).toBe(`<code>${r.imageSha256}</code>`);
  });

  it('has one row per verify probe and per hardening check', () => {
    const r = result();
    const html = renderSummary(r);
    const probes = tableAfter(html, 'Verify probes');
    expect(probes.map((p) => p[0])).toEqual(r.verify!.probes.map((p) => `<code>${p.name}</code>`));
    expect(probes.every((p) => p[1]!.startsWith('✅'))).toBe(true);
    const hardening = tableAfter(html, 'Hardening checks');
    expect(hardening.map((h) => h[0])).toEqual(
      r.verify!.hardening.map((h) => `<code>${h.name}</code>`),
    );
    expect(hardening.map((h) => h[2])).toEqual(
      r.verify!.hardening.map((h) => escapeHtml(h.detail)),
    );
  });

  it('marks failures and shows a failing probe diff open', () => {
    const r = result();
    r.verify!.ok = false;
    r.verify!.probes[1] = { name: 'about', ok: false, bytes: 99, diff: '-expected\n+got <b>' };
    r.verify!.hardening[0]!.ok = false;
    const html = renderSummary(r);
    expect(html).toContain('<h2>lhc: gophermoon ❌</h2>');
    expect(tableAfter(html, 'Verify probes')[1]![1]).toMatch(/^❌/);
    expect(tableAfter(html, 'Hardening checks')[0]![1]).toMatch(/^❌/);
    expect(html).toContain('<details open><summary>diff of probe about</summary>');
    expect(html).toContain('+got &#60;b&#62;');
  });

  it('puts the manifest diff in collapsible details, escaped, only when there is one', () => {
    expect(renderSummary(result())).not.toContain('Manifest changed');
    const html = renderSummary(result({ manifestDiff: '+ /bin/<new>\n- /lib/old & gone' }));
    expect(html).toContain('<h3>Manifest changed</h3>');
    expect(html).toMatch(
      /<details open><summary>manifest diff against the lock<\/summary>\s*<pre>\+ \/bin\/&#60;new&#62;\n- \/lib\/old &#38; gone<\/pre>/,
    );
  });

  it('cuts very long texts so the summary stays under the size limit', () => {
    const diff = 'x'.repeat(MAX_DETAIL_CHARS * 3);
    const html = renderSummary(result({ manifestDiff: diff }));
    expect(html.length).toBeLessThan(MAX_DETAIL_CHARS + 10_000);
    expect(html).toContain(`${MAX_DETAIL_CHARS * 2} more characters cut`);
  });

  it('escapes every text that comes from the config or the build', () => {
    const r = result();
    r.verify!.hardening[0]!.detail = '<script>alert(1)</script>';
    const html = renderSummary(r, { config: 'a<b>.yml' });
    expect(html).not.toContain('<script>');
    expect(html).not.toContain('a<b>');
  });

  it('says when verify did not run, and reports cache and artifact outcomes', () => {
    const html = renderSummary(result({ verify: undefined }), {
      cache: {
        enabled: true,
        store: { key: 'k1', path: '/s', restored: 'k1' },
        lua: { key: 'k2', path: '/l' },
      },
      artifacts: {
        name: 'lhc-gophermoon',
        uploaded: false,
        files: 8,
        skipped: 'no artifact service',
      },
    });
    expect(html).toContain('verify was not run');
    expect(html).not.toContain('Hardening checks');
    expect(html).toContain('cache store: hit (<code>k1</code>)');
    expect(html).toContain('cache lua: miss (<code>k2</code>)');
    expect(html).toContain(
      'artifact <code>lhc-gophermoon</code>: not uploaded (no artifact service)',
    );
  });

  it('formats bytes exactly with a rounded unit', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(2048)).toBe('2048 B (2.0 KiB)');
    expect(formatBytes(3 * 1024 * 1024 + 1)).toBe('3145729 B (3.0 MiB)');
  });
});

describe('writeSummary', () => {
  const saved = process.env.GITHUB_STEP_SUMMARY;
  let dir: string | undefined;
  afterEach(async () => {
    if (saved === undefined) delete process.env.GITHUB_STEP_SUMMARY;
    else process.env.GITHUB_STEP_SUMMARY = saved;
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('appends the rendered summary to $GITHUB_STEP_SUMMARY', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-summary-'));
    const file = path.join(dir, 'summary.md');
    await writeFile(file, 'previous step\n');
    process.env.GITHUB_STEP_SUMMARY = file;
    const r = result();
    expect(await writeSummary(r, {})).toBe(true);
    const text = await readFile(file, 'utf8');
    expect(text.startsWith('previous step\n')).toBe(true);
    expect(text).toContain(renderSummary(r, {}));
  });

  it('skips quietly without $GITHUB_STEP_SUMMARY and warns when the file cannot be written', async () => {
    delete process.env.GITHUB_STEP_SUMMARY;
    const log = memoryLogger();
    expect(await writeSummary(result(), {}, log)).toBe(false);
    expect(log.lines).toEqual([]);
    process.env.GITHUB_STEP_SUMMARY = '/nonexistent-dir/summary.md';
    expect(await writeSummary(result(), {}, log)).toBe(false);
    expect(log.lines.join('\n')).toMatch(/^warning: summary: could not write the job summary/);
  });
});
