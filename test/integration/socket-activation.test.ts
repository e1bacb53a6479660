/**
 * `service.socket-activation: true` with a real daemon that takes LISTEN_FDS: examples/lighttpd
 * with `server.systemd-socket-activation = "enable"`. Trace, self-check and verify reach it only
 * through the socket systemd-socket-activate holds on a host port and passes into the container
 * (which keeps its own network namespace): if lighttpd ignored the socket, nothing would accept
 * there and every probe would fail. Then the release on the simulated board: the socket unit
 * starts the container directly, no proxy unit ships, and the probes answer on the board's port 80.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBoardReport, verifyOnBoard } from '../../src/board/verify-board.js';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { build } from '../../src/pipeline.js';
import { run } from '../../src/tools/exec.js';
import { seededBuildCache, testCacheDir } from '../support/debian-inputs.js';
import { EXAMPLE_BUILD_TIMEOUT_MS, REPO } from '../support/example-build.js';

/** examples/lighttpd and its fixtures in a scratch checkout, switched to socket activation. */
function socketActivatedLighttpd(dest: string): string {
  cpSync(path.join(REPO, 'examples/lighttpd'), path.join(dest, 'examples/lighttpd'), {
    recursive: true,
  });
  cpSync(path.join(REPO, 'fixtures/lighttpd'), path.join(dest, 'fixtures/lighttpd'), {
    recursive: true,
  });
  execFileSync('git', ['init', '-q', dest]);
  const conf = path.join(dest, 'examples/lighttpd/lighttpd.conf');
  writeFileSync(
    conf,
    `${readFileSync(conf, 'utf8')}\n# Take the listening socket from systemd (LISTEN_FDS).\nserver.systemd-socket-activation = "enable"\n`,
  );
  const file = path.join(dest, 'examples/lighttpd/lhc.yml');
  const yml = readFileSync(file, 'utf8');
  const edited = yml.replace(/^ {2}listen: 80$/m, '  listen: 80\n  socket-activation: true');
  if (edited === yml)
    throw new Error('test bug: no "listen: 80" line in examples/lighttpd/lhc.yml');
  writeFileSync(file, edited);
  return file;
}

describe('service.socket-activation: lighttpd takes its socket from systemd', () => {
  let tmp: string;
  let config: LhcConfig;
  let result: BuildResult;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-socket-activation-'));
    config = await loadConfig(socketActivatedLighttpd(path.join(tmp, 'src')));
    expect(config.service['socket-activation']).toBe(true);
    const { cacheDir, store } = await seededBuildCache();
    result = await build(config, {
      outDir: path.join(tmp, 'out'),
      logger: memoryLogger(),
      store,
      cacheDir,
      // The shared base of the Debian examples.
      basesDir: path.join(testCacheDir(), 'bases'),
      requests: 20,
      concurrency: 4,
      env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
    });
  }, EXAMPLE_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  it('builds, self-checks and verifies through the passed socket only', () => {
    const v = result.verify!;
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.load).toMatchObject({ requests: 20, failures: 0 });
    expect(v.ok).toBe(true);
  });

  it('ships units where the socket starts the service directly: no proxy', () => {
    const deploy = path.join(result.outDir, 'deploy');
    expect(existsSync(path.join(deploy, 'lighttpd-proxy.service'))).toBe(false);
    const socket = readFileSync(path.join(deploy, 'lighttpd.socket'), 'utf8');
    expect(socket).toMatch(/^ListenStream=80$/m);
    expect(socket).not.toMatch(/^Service=/m);
    const service = readFileSync(path.join(deploy, 'lighttpd.service'), 'utf8');
    expect(service).toContain('--private-network');
    expect(service).not.toMatch(/^PrivateNetwork=/m);
  });

  it(
    'answers every probe on the simulated board through the socket systemd holds on port 80',
    async () => {
      const report = await verifyOnBoard({ config, outDir: result.outDir, logger: memoryLogger() });
      expect(report.ok, formatBoardReport(report).join('\n')).toBe(true);
      expect(report.probes.map((p) => p.name)).toContain('index (curl on the board)');
    },
    EXAMPLE_BUILD_TIMEOUT_MS,
  );
});
