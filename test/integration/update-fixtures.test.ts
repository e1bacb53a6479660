/**
 * `lhc build --update-fixtures` on a real build (issue 14): with the fixtures missing, a plain
 * build is refused naming the flag; the CLI with the flag records every probe's traced response,
 * prints each write and passes verify; a second build without the flag passes on the recorded
 * files; a fixture changed by hand is rewritten and reported while the others stay untouched;
 * and a pruned image that answers differently still fails the build although its fixtures were
 * recorded from the unpruned run.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, UserError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';
import { run } from '../../src/tools/exec.js';
import {
  buildProbeService,
  FIXTURES,
  INETD_SERVICE,
  PING_ECHO_SEND,
  probeServiceProject,
} from '../support/probe-service.js';
import { testCacheDir } from '../support/debian-inputs.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const TSX = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;

const PROBES = `  - {name: index, type: http, path: /index.txt, fixture: fixtures/index.txt}
  - {name: missing, type: http, path: /nope.txt, status: 404, fixture: fixtures/404.txt}
  - {name: ping-echo, type: tcp, send: "${PING_ECHO_SEND}", fixture: fixtures/ping-echo.txt}`;
const RECORDED = ['fixtures/index.txt', 'fixtures/404.txt', 'fixtures/ping-echo.txt'];

function lhc(args: string[], cwd: string) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(
      process.execPath,
      ['--import', TSX, path.join(REPO, 'src/cli-entry.ts'), ...args],
      {
        cwd,
        env: { ...process.env, LHC_CACHE_DIR: path.join(testCacheDir(), 'lhc-cache') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await run(['rm', '-rf', '--one-file-system', d], { privileged: true });
});

describe('lhc build --update-fixtures', () => {
  let tmp: string;
  let config: string;
  let cli: Awaited<ReturnType<typeof lhc>>;
  let plain: unknown;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-update-fixtures-'));
    dirs.push(tmp);
    config = await probeServiceProject(tmp, {
      service: INETD_SERVICE,
      probes: PROBES,
      fixtures: false,
    });
    plain = await buildProbeService(tmp, config, { outDir: path.join(tmp, 'out-plain') }).catch(
      (err: unknown) => err,
    );
    cli = await lhc(['build', '--update-fixtures', '--out', 'out'], tmp);
  }, 1_200_000);

  it('without the flag, missing fixtures are a config error that names --update-fixtures', () => {
    expect(plain).toBeInstanceOf(ConfigError);
    const lines = (plain as Error).message.split('\n');
    expect(lines).toHaveLength(3);
    for (const [i, f] of RECORDED.entries())
      expect(lines[i]).toBe(
        `probes[${i}].fixture: cannot read ${path.join(tmp, f)} (ENOENT); record it from the traced run with \`lhc build --update-fixtures\` (action input update-fixtures: true)`,
      );
  });

  it('records every fixture from the traced run, prints each write and passes verify', () => {
    expect(cli.code, cli.stderr).toBe(0);
    for (const [i, f] of RECORDED.entries()) {
      expect(readFileSync(path.join(tmp, f), 'latin1'), f).toBe(FIXTURES[f]);
      const probe = ['index', 'missing', 'ping-echo'][i];
      expect(cli.stdout).toContain(
        `fixture       ${path.join(tmp, f)} (new, ${Buffer.byteLength(FIXTURES[f]!)} bytes, probe ${probe})`,
      );
      expect(cli.stderr).toContain(
        `fixture ${f}: new, ${Buffer.byteLength(FIXTURES[f]!)} bytes written (probe '${probe}')`,
      );
      expect(statSync(path.join(tmp, f)).mode & 0o777).toBe(0o644);
    }
    expect(cli.stdout).toMatch(/^verify +ok$/m);
    expect(existsSync(path.join(tmp, 'out/SHA256SUMS'))).toBe(true);
  });

  it('a second build without the flag passes on the recorded fixtures', async () => {
    const r = await buildProbeService(tmp, config, { outDir: path.join(tmp, 'out2') });
    expect(r.fixtures).toBeUndefined();
    expect(r.verify?.probes.filter((p) => !p.ok)).toEqual([]);
    expect(r.verify!.ok).toBe(true);
  }, 1_200_000);

  it('rewrites a changed fixture and reports it, leaving the others as they are', async () => {
    const file = path.join(tmp, 'fixtures/ping-echo.txt');
    writeFileSync(file, '+PONG\r\nedited by hand\r\n');
    const before = statSync(path.join(tmp, 'fixtures/index.txt')).mtimeMs;
    const logger = memoryLogger();
    const r = await buildProbeService(tmp, config, {
      outDir: path.join(tmp, 'out3'),
      updateFixtures: true,
      logger,
    });
    expect(r.fixtures!.map((f) => [f.probe, f.change])).toEqual([
      ['index', 'unchanged'],
      ['missing', 'unchanged'],
      ['ping-echo', 'changed'],
    ]);
    expect(readFileSync(file, 'latin1')).toBe(FIXTURES['fixtures/ping-echo.txt']);
    expect(statSync(path.join(tmp, 'fixtures/index.txt')).mtimeMs).toBe(before);
    expect(logger.lines).toContain(
      `fixture fixtures/ping-echo.txt: changed, ${Buffer.byteLength(FIXTURES['fixtures/ping-echo.txt']!)} bytes written (probe 'ping-echo')`,
    );
    expect(r.verify!.ok).toBe(true);
  }, 1_200_000);
});

describe('--update-fixtures does not hide a pruned image that answers differently', () => {
  it('records from the unpruned run, then the build fails', async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-update-fixtures-drop-'));
    dirs.push(tmp);
    // drop: removes the page the index probe serves from the pruned root only.
    const config = await probeServiceProject(tmp, {
      service: INETD_SERVICE,
      probes: PROBES,
      fixtures: false,
      extra: 'drop:\n  - /www/index.txt\n',
    });
    const e = await buildProbeService(tmp, config, { updateFixtures: true }).catch(
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).toMatch(
      /^self-check failed: 1 of 3 probe\(s\) answer differently/,
    );
    expect((e as Error).message).toContain("probe 'index'");
    expect(readFileSync(path.join(tmp, 'fixtures/index.txt'), 'latin1')).toBe(
      FIXTURES['fixtures/index.txt'],
    );
  }, 1_200_000);
});
