/**
 * examples/micro-httpd on the shared Debian arm64 base: an inetd HTTP server, one read-only
 * container per connection, probed with HTTP on stdin. It exits 1 after an error page, which
 * service.success-exit-status declares a served connection; the 404 and 400 pages are probed.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EXAMPLE_BUILD_TIMEOUT_MS,
  NEVER_IN_IMAGE,
  REPO,
  BOARD_VERIFY_TIMEOUT_MS,
  buildExample,
  expectBoardOk,
  type ExampleBuild,
} from '../support/example-build.js';

describe('lhc build on examples/micro-httpd (inetd, http probes on stdin)', () => {
  let b: ExampleBuild;

  beforeAll(async () => {
    b = await buildExample('micro-httpd');
  }, EXAMPLE_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await b?.cleanup();
  });

  it('keeps micro_httpd, libc and the site: under 1 % of the base', () => {
    for (const p of [
      '/usr/sbin/micro-httpd',
      '/usr/lib/aarch64-linux-gnu/libc.so.6',
      '/var/www/micro/index.html',
      '/var/www/micro/moon.txt',
    ])
      expect(b.imagePaths).toContain(p);
    for (const p of [...NEVER_IN_IMAGE, '/usr/sbin/inetd', '/usr/sbin/lighttpd'])
      expect(b.imagePaths).not.toContain(p);
    expect(b.result.bytesAfter / b.result.bytesBefore).toBeLessThan(0.01);
  });

  it('matches the committed manifest lock', () => {
    expect(b.result.manifestDiff).toBeUndefined();
  });

  it('answers 200, 404 and 400 with the recorded bodies, from the read-only image', () => {
    const v = b.result.verify!;
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.find((p) => p.name === 'missing')?.bytes).toBe(
      readFileSync(path.join(REPO, 'fixtures/micro-httpd/not-found.html')).length,
    );
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 20, failures: 0 });
    expect(v.ok).toBe(true);
  });
  it(
    'answers every probe on the simulated board, installed by deploy/install.sh',
    async () => {
      const config = await loadConfig(path.join(REPO, 'examples/micro-httpd/lhc.yml'));
      await expectBoardOk(config, b.result.outDir);
    },
    BOARD_VERIFY_TIMEOUT_MS,
  );
});
