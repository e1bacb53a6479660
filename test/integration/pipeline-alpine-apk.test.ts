/**
 * The pipeline on examples/alpine-apk: Alpine's real aarch64 minirootfs as a tarball base (copied
 * into a scratch checkout, so the config's path stays inside the project), `prepare` installing
 * a package with `apk add` from a local repository served over HTTP on 127.0.0.1, then the
 * packaged BusyBox sh Gopher server traced, pruned, packed, booted read-only and probed.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { readManifest } from '../../src/manifest/diff.js';
import { build } from '../../src/pipeline.js';
import { run } from '../../src/tools/exec.js';
import {
  ALPINE_MINIROOTFS,
  alpineMinirootfs,
  makeApkRepository,
  serveDirectory,
  type StaticServer,
} from '../support/apk-repo.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { BOARD_VERIFY_TIMEOUT_MS, expectBoardOk } from '../support/example-build.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const EXAMPLE = path.join(REPO, 'examples/alpine-apk');
/** The repository URL as committed in the example; the test serves on a free port instead. */
const COMMITTED_REPOSITORY = 'http://127.0.0.1:8370/';

describe('lhc build on examples/alpine-apk (Alpine minirootfs, apk add from a local repository)', () => {
  let tmp: string;
  let server: StaticServer | undefined;
  let result: BuildResult;
  let config: LhcConfig;
  let prepareLog: string[];

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-alpine-apk-'));
    const checkout = path.join(tmp, 'checkout');
    cpSync(EXAMPLE, path.join(checkout, 'examples/alpine-apk'), { recursive: true });
    cpSync(path.join(REPO, 'fixtures/alpine-apk'), path.join(checkout, 'fixtures/alpine-apk'), {
      recursive: true,
    });
    execFileSync('git', ['init', '-q', checkout]);
    copyFileSync(
      await alpineMinirootfs(),
      path.join(checkout, 'examples/alpine-apk', ALPINE_MINIROOTFS.file),
    );

    const repo = await makeApkRepository(
      [
        {
          name: 'moon-gopher',
          version: '1.0-r0',
          description: 'A Gopher server in BusyBox sh and awk',
          tree: path.join(EXAMPLE, 'moon-gopher'),
          epoch: 1_700_000_000,
        },
      ],
      path.join(tmp, 'repo'),
    );
    server = await serveDirectory(repo);
    const configFile = path.join(checkout, 'examples/alpine-apk/lhc.yml');
    const text = readFileSync(configFile, 'utf8');
    expect(text.split(COMMITTED_REPOSITORY)).toHaveLength(2);
    writeFileSync(
      configFile,
      text.replace(COMMITTED_REPOSITORY, `http://127.0.0.1:${server.port}/`),
    );

    const { cacheDir, store } = await seededBuildCache();
    const logger = memoryLogger();
    config = await loadConfig(configFile);
    result = await build(config, {
      outDir: path.join(tmp, 'out'),
      logger,
      store,
      cacheDir,
      manifestLock: path.join(EXAMPLE, 'manifest.lock.json'),
      requests: 20,
      concurrency: 4,
      env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
    });
    prepareLog = logger.lines;
  }, 900_000);

  afterAll(async () => {
    await server?.close();
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  it('installed the package with apk over HTTP from the local repository', () => {
    expect(server!.requests).toEqual([
      '/aarch64/APKINDEX.tar.gz',
      '/aarch64/moon-gopher-1.0-r0.apk',
    ]);
    expect(prepareLog.join('\n')).toMatch(/Installing moon-gopher \(1\.0-r0\)/);
  });

  it('matches the committed manifest lock', () => {
    expect(result.manifestDiff).toBeUndefined();
  });

  it('keeps BusyBox, musl and the package, and drops apk and its database', async () => {
    const paths = (await readManifest(result.manifest)).image.map((e) => e.path);
    for (const p of [
      '/usr/bin/moon-gopher',
      '/bin/busybox',
      '/bin/sh',
      '/lib/ld-musl-aarch64.so.1',
      '/srv/gopher/.menu',
      '/srv/gopher/moon/phases.txt',
    ])
      expect(paths).toContain(p);
    for (const p of [
      '/sbin/apk',
      '/lib/apk/db/installed',
      '/etc/apk/world',
      '/lib/libapk.so.2.14.0',
    ])
      expect(paths).not.toContain(p);
    expect(result.bytesAfter / result.bytesBefore).toBeLessThan(0.25);
  });

  it('answers every probe like its fixture from the booted read-only image', () => {
    const v = result.verify!;
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.find((p) => p.name === 'root')?.bytes).toBe(
      readFileSync(path.join(REPO, 'fixtures/alpine-apk/root.menu.gopher')).length,
    );
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 20, failures: 0 });
    expect(v.ok).toBe(true);
    expect(result.sha256sums).toBeDefined();
  });

  it(
    'answers every probe on the simulated board, installed by deploy/install.sh',
    async () => {
      await expectBoardOk(config, result.outDir);
    },
    BOARD_VERIFY_TIMEOUT_MS,
  );
});
