/**
 * examples/pygopherd on the shared Debian arm64 base: a Python service. The standard library is
 * over a thousand files; the image keeps the modules the interpreter opened and the names in the
 * directories its import system listed, and nothing else of Python.
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PruneReport } from '../../src/prune/report.js';
import {
  EXAMPLE_BUILD_TIMEOUT_MS,
  NEVER_IN_IMAGE,
  REPO,
  BOARD_VERIFY_TIMEOUT_MS,
  buildExample,
  expectBoardOk,
  type ExampleBuild,
} from '../support/example-build.js';

const STDLIB = '/usr/lib/python3.11';

describe('lhc build on examples/pygopherd (Python, listen 70)', () => {
  let b: ExampleBuild;
  let report: PruneReport;

  beforeAll(async () => {
    b = await buildExample('pygopherd');
    report = JSON.parse(readFileSync(b.result.traceReport, 'utf8')) as PruneReport;
  }, EXAMPLE_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await b?.cleanup();
  });

  it('keeps the stdlib modules Python imported, and drops the subpackages it never entered', () => {
    const kept = new Map(report.kept.list.map((k) => [k.path, k.why]));
    // Imported by pygopherd (socketserver for the forking server, configparser for its config).
    for (const m of ['socketserver.py', 'configparser.py', 'mimetypes.py'])
      expect(kept.get(`${STDLIB}/${m}`)).toContain('traced-open');
    // Packages Python never imported: at most their directory's name is kept, none of their files.
    for (const pkg of ['unittest', 'asyncio', 'pydoc_data', 'multiprocessing', 'sqlite3'])
      expect(b.imagePaths.filter((p) => p.startsWith(`${STDLIB}/${pkg}/`))).toEqual([]);
    // A listed extension module is kept by name; its libraries are not (never loaded).
    expect(b.imagePaths.some((p) => p.startsWith(`${STDLIB}/lib-dynload/_sqlite3.`))).toBe(true);
    expect(b.imagePaths.filter((p) => p.includes('libsqlite3'))).toEqual([]);
  });

  it('keeps well under a third of the base, and no shell or package manager', () => {
    expect(b.result.bytesBefore).toBeGreaterThan(200_000_000);
    expect(b.result.bytesAfter / b.result.bytesBefore).toBeLessThan(0.2);
    const stdlibFiles = b.imagePaths.filter(
      (p) => p.startsWith(`${STDLIB}/`) && p.endsWith('.py'),
    ).length;
    expect(stdlibFiles).toBeGreaterThan(50);
    for (const p of NEVER_IN_IMAGE) expect(b.imagePaths).not.toContain(p);
    // -I keeps the script's directory off sys.path: nothing else of /usr/sbin is listed or kept.
    expect(b.imagePaths.filter((p) => p.startsWith('/usr/sbin/'))).toEqual(['/usr/sbin/pygopherd']);
  });

  it('keeps all the served content', () => {
    const walk = (d: string, inImage: string): string[] =>
      readdirSync(d, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory()
          ? [`${inImage}/${e.name}`, ...walk(path.join(d, e.name), `${inImage}/${e.name}`)]
          : [`${inImage}/${e.name}`],
      );
    for (const p of walk(path.join(REPO, 'examples/pygopherd/gopher'), '/srv/gopher'))
      expect(b.imagePaths).toContain(p);
  });

  it('matches the committed manifest lock', () => {
    expect(b.result.manifestDiff).toBeUndefined();
  });

  it('answers every probe like its fixture from the booted read-only image', () => {
    const v = b.result.verify!;
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.find((p) => p.name === 'root')?.bytes).toBe(
      readFileSync(path.join(REPO, 'fixtures/pygopherd/root.menu.gopher')).length,
    );
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 20, failures: 0 });
    expect(v.ok).toBe(true);
  });
  it(
    'answers every probe on the simulated board, installed by deploy/install.sh',
    async () => {
      const config = await loadConfig(path.join(REPO, 'examples/pygopherd/lhc.yml'));
      await expectBoardOk(config, b.result.outDir);
    },
    BOARD_VERIFY_TIMEOUT_MS,
  );
});
