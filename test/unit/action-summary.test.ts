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

/** Rows (cells as HTML) of the first <table> after `marker` in the html. */
function tableAfter(html: string, marker: string): string[][] {
  const at = html.indexOf(marker);
  expect(at, `marker ${marker}`).toBeGreaterThanOrEqual(0);
  const start = html.indexOf('<table>', at);
  const end = html.indexOf('</table>', start);
  const rows = html.slice(start, end).match(/<tr>.*?<\/tr>/g) ?? [];
  return rows.slice(1).map((r) => [...r.matchAll(/<td>(.*?)<\/td>/g)].map((m) => m[1]!));
}

describe('renderSummary', () => {
  it('shows the exposure score of each service unit, and why nspawn scores high', () => {
    const units = (score: number, level: string) => [
      { file: 'deploy/gophermoon@.service', unit: 'gophermoon@i.service', score, level },
    ];
    const sandboxed = renderSummary(
      result({ exposure: { runtime: 'systemd', systemd: '252', units: units(0.3, 'SAFE') } }),
    );
    expect(sandboxed).toContain('exposure (systemd-analyze security, runtime systemd): 0.3');
    expect(sandboxed).toContain('<code>gophermoon@i.service</code>');
    const nspawn = renderSummary(
      result({ exposure: { runtime: 'nspawn', systemd: '252', units: units(9.6, 'UNSAFE') } }),
    );
    expect(nspawn).toContain('9.6 (systemd-analyze cannot see the confinement nspawn sets up');
    expect(renderSummary(result())).not.toContain('exposure');
  });

  it('opens with one compact row per image: result, size, sha256 prefix, files kept, pruning, verify', () => {
    const r = result();
    const html = renderSummary(r);
    expect(html.startsWith('<h2>lhc: gophermoon ✅ passed</h2>')).toBe(true);
    const [row] = tableAfter(html, '<h2>');
    expect(row).toEqual([
      // The file name only (the path is in the folded files table); the size never wraps.
      '<code>gophermoon.squashfs</code>',
      '✅',
      '400.0\u00a0KiB',
      `<code>${'a'.repeat(12)}</code>`,
      '17',
      '7.6 MiB → 1.9 MiB (−75 %)',
      '✅ 2/2 probes, 3/3 hardening',
    ]);
  });

  it('folds passing probes and hardening rows into <details>', () => {
    const r = result();
    const html = renderSummary(r);
    expect(html).toContain('<details><summary>2 probes matched their fixtures</summary>');
    expect(html).toContain('<details><summary>3 hardening checks passed</summary>');
    const probes = tableAfter(html, '2 probes matched');
    expect(probes.map((p) => p[0])).toEqual(r.verify!.probes.map((p) => `<code>${p.name}</code>`));
    const hardening = tableAfter(html, '3 hardening checks passed');
    expect(hardening.map((h) => h[1])).toEqual(
      r.verify!.hardening.map((h) => escapeHtml(h.detail)),
    );
    expect(html).not.toContain('❌');
  });

  it('puts failures first, each probe diff inline, before any passing row', () => {
    const r = result();
    r.verify!.ok = false;
    r.verify!.probes[1] = { name: 'about', ok: false, bytes: 99, diff: '-expected\n+got <b>' };
    r.verify!.hardening[0]!.ok = false;
    const html = renderSummary(r);
    expect(html).toContain('<h2>lhc: gophermoon ❌ failed</h2>');
    const probeAt = html.indexOf('<h3>❌ probe <code>about</code> differs from its fixture</h3>');
    const diffAt = html.indexOf('<pre>-expected\n+got &#60;b&#62;</pre>');
    const hardAt = html.indexOf('<h3>❌ hardening checks failed</h3>');
    const passedAt = html.indexOf('<details>');
    expect(probeAt).toBeGreaterThan(0);
    expect(diffAt).toBeGreaterThan(probeAt);
    expect(hardAt).toBeGreaterThan(diffAt);
    expect(passedAt).toBeGreaterThan(hardAt);
    expect(tableAfter(html, 'hardening checks failed')[0]![0]).toBe('<code>read-only-root</code>');
    expect(tableAfter(html, '<h2>')[0]![6]).toBe('❌ 1/2 probes, 2/3 hardening');
  });

  it('a manifest-lock failure shows the diff first and names the update-manifest input', () => {
    expect(renderSummary(result())).not.toContain('manifest differs');
    const html = renderSummary(result({ manifestDiff: '+ /bin/<new>\n- /lib/old & gone' }), {
      manifestLock: { path: '/ws/examples/x/manifest.lock.json', updated: false },
      env: { GITHUB_WORKSPACE: '/ws' },
    });
    expect(html).toContain('<h2>lhc: gophermoon ❌ failed</h2>');
    expect(html).toContain(
      '<h3>❌ The manifest differs from the lock <code>examples/x/manifest.lock.json</code></h3>',
    );
    expect(html).toContain('<pre>+ /bin/&#60;new&#62;\n- /lib/old &#38; gone</pre>');
    expect(html).toContain('<code>update-manifest: true</code> input');
    expect(html).not.toContain('--update-manifest');
  });

  it('a failed build says that no SHA256SUMS was written and where the report is', () => {
    const html = renderSummary(
      result({ sha256sums: undefined, failureReport: '/ws/out/gophermoon.build-failed.txt' }),
      { env: { GITHUB_WORKSPACE: '/ws' } },
    );
    expect(html).toContain('<h2>lhc: gophermoon ❌ failed</h2>');
    expect(html).toContain('No <code>SHA256SUMS</code> was written');
    expect(html).toContain('<code>out/gophermoon.build-failed.txt</code>');
    expect(renderSummary(result())).not.toContain('No <code>SHA256SUMS</code>');
  });

  it('a board column when the board ran, its failures with the journal before the passes', () => {
    expect(tableAfter(renderSummary(result()), '<h2>')[0]).toHaveLength(7);
    const report = {
      ok: false,
      probes: [
        { name: 'root', ok: true, bytes: 3 },
        { name: 'about', ok: false, bytes: 2, diff: '-a\n+b' },
      ],
      hardening: [{ name: 'read-only-root', ok: true, detail: 'EROFS' }],
      journal: 'gophermoon@0.service: Failed',
      timings: { rootSeconds: 1, bootSeconds: 1, installSeconds: 1, probeMs: [1, 2] },
    };
    const html = renderSummary(result(), { board: { ok: false, report } });
    expect(html).toContain('<h2>lhc: gophermoon ❌ failed</h2>');
    expect(tableAfter(html, '<h2>')[0]![7]).toBe('❌ 1/2 probes, 1/1 hardening');
    const probeAt = html.indexOf('on the board, probe <code>about</code> differs');
    expect(probeAt).toBeGreaterThan(0);
    expect(html.indexOf('<pre>-a\n+b</pre>')).toBeGreaterThan(probeAt);
    expect(html).toContain('gophermoon@0.service: Failed');
    const ok = renderSummary(result(), {
      board: {
        ok: true,
        report: { ...report, ok: true, probes: [report.probes[0]!], journal: undefined },
      },
    });
    expect(ok).toContain('✅ passed');
    expect(tableAfter(ok, '<h2>')[0]![7]).toBe('✅ 1/1 probes, 1/1 hardening');
    const skipped = renderSummary(result(), { board: { ok: false, skipped: 'the build failed' } });
    expect(tableAfter(skipped, '<h2>')[0]![7]).toBe('not run (the build failed)');
    const broken = renderSummary(result(), { board: { ok: false, error: 'mmdebstrap failed' } });
    expect(broken).toContain('<h3>❌ board verify did not complete</h3>');
    expect(broken).toContain('<pre>mmdebstrap failed</pre>');
  });

  it('an updated lock is announced, folded, and is not a failure', () => {
    const html = renderSummary(result({ manifestDiff: '+ /bin/new' }), {
      manifestLock: { path: 'manifest.lock.json', updated: true },
    });
    expect(html).toContain('✅ passed');
    expect(html).toContain(
      '<summary>manifest lock manifest.lock.json updated: commit it</summary>',
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

  it('shows paths relative to the workspace and links the uploaded artifact', () => {
    const ws = '/home/runner/work/repo/repo';
    const r = result({ image: `${ws}/out/gophermoon.squashfs` });
    // A failing probe's diff names its fixture by absolute path.
    r.verify!.ok = false;
    r.verify!.probes[1] = {
      name: 'about',
      ok: false,
      bytes: 9,
      diff: `--- fixture ${ws}/fixtures/about.gopher\n+++ response (127.0.0.1:7070)\n-a\n+b`,
    };
    const html = renderSummary(r, {
      config: `${ws}/lhc.yml`,
      version: '0.1.0',
      artifacts: { name: 'lhc-gophermoon', uploaded: true, files: 8, id: 42, size: 300_000 },
      env: {
        GITHUB_WORKSPACE: ws,
        GITHUB_SERVER_URL: 'https://github.example',
        GITHUB_REPOSITORY: 'o/r',
        GITHUB_RUN_ID: '7',
      },
    });
    expect(html).not.toContain(ws);
    expect(html).toContain('<code>out/gophermoon.squashfs</code>');
    expect(html).toContain('--- fixture fixtures/about.gopher\n');
    expect(html).toContain(
      '<a href="https://github.example/o/r/actions/runs/7/artifacts/42">lhc-gophermoon</a> (8 files, 293.0 KiB)',
    );
    expect(html).toContain('lhc 0.1.0');
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
    expect(tableAfter(html, '<h2>')[0]![6]).toBe('not run');
    expect(html).not.toContain('hardening check');
    expect(html).toContain('cache: store hit, lua miss');
    expect(html).toContain(
      'artifact <code>lhc-gophermoon</code> not uploaded (no artifact service)',
    );
  });

  it('formats bytes in human units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(2048)).toBe('2.0 KiB');
    expect(formatBytes(3 * 1024 * 1024 + 1)).toBe('3.0 MiB');
  });

  it('says "nothing removed" rather than 0 %', () => {
    const html = renderSummary(result({ bytesBefore: 1000, bytesAfter: 1000 }));
    expect(tableAfter(html, '<h2>')[0]![5]).toBe('1000 B → 1000 B (nothing removed)');
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
