/**
 * examples/lighttpd on the shared Debian arm64 base: lighttpd listens on port 80, drops to
 * www-data by its own server.username, and loads modules with dlopen. No ELF header names those
 * modules, so only the trace can keep them: the image must hold exactly the ones it loaded.
 */
import { readFileSync } from 'node:fs';
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

describe('lhc build on examples/lighttpd (listen, dlopen modules, drops to www-data)', () => {
  let b: ExampleBuild;

  beforeAll(async () => {
    b = await buildExample('lighttpd');
  }, EXAMPLE_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await b?.cleanup();
  });

  it('keeps the modules lighttpd.conf loads with dlopen, and no other module', () => {
    const modules = b.imagePaths.filter((p) => p.startsWith('/usr/lib/lighttpd/'));
    expect(modules.sort()).toEqual([
      '/usr/lib/lighttpd/mod_accesslog.so',
      '/usr/lib/lighttpd/mod_dirlisting.so',
    ]);
    const report = JSON.parse(readFileSync(b.result.traceReport, 'utf8')) as PruneReport;
    for (const m of modules)
      expect(report.kept.list.find((k) => k.path === m)?.why).toContain('traced-open');
  });

  it('keeps what getpwnam("www-data") reads, and no shell or package manager', () => {
    for (const p of ['/usr/sbin/lighttpd', '/etc/passwd', '/etc/group', '/etc/nsswitch.conf'])
      expect(b.imagePaths).toContain(p);
    for (const p of NEVER_IN_IMAGE) expect(b.imagePaths).not.toContain(p);
  });

  it('matches the committed manifest lock', () => {
    expect(b.result.manifestDiff).toBeUndefined();
  });

  it('answers every probe from the booted read-only image, as www-data', () => {
    const v = b.result.verify!;
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.find((p) => p.name === 'index')?.bytes).toBe(
      readFileSync(path.join(REPO, 'fixtures/lighttpd/index.html')).length,
    );
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 20, failures: 0 });
    expect(v.ok).toBe(true);
  });
  it(
    'answers every probe on the simulated board, installed by deploy/install.sh',
    async () => {
      const config = await loadConfig(path.join(REPO, 'examples/lighttpd/lhc.yml'));
      await expectBoardOk(config, b.result.outDir);
    },
    BOARD_VERIFY_TIMEOUT_MS,
  );
});
