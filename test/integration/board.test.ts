/**
 * The release on a simulated board: build outputs of examples/gophermoon (inetd, port 70) and
 * examples/nginx (listen, port 80) installed by their own deploy/install.sh on a booted systemd
 * machine, probed through the board's real socket, byte for byte against the fixtures; a broken
 * unit that fails with its journal in the report; upgrade and rollback with probes running all
 * along. Each board is powered off and leaves no mount, loop device or process behind.
 */
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Board, listLoops } from '../../src/board/machine.js';
import {
  boardHardening,
  formatBoardReport,
  installOnBoard,
  openBoardPort,
  verifyOnBoard,
} from '../../src/board/verify-board.js';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import type { GopherProbe } from '../../src/config/schema.js';
import { memoryLogger } from '../../src/core/logger.js';
import { writeSha256Sums } from '../../src/stages/outputs.js';
import { run } from '../../src/tools/exec.js';
import { exchange, gopherRequest, type Endpoint } from '../../src/harness/client.js';
import {
  NGINX_CONFIG,
  buildOut,
  gophermoonConfig,
  gophermoonV2,
  testBoardTarball,
} from '../support/board.js';
import { snapshot, sweepLeftovers, requireTools } from '../support/verify-image.js';

let tmp: string;
let gopher: BuildResult;

/** Loop devices backed by a board's install directory: none may outlive a board. */
async function boardLoops(): Promise<string[]> {
  return (await listLoops())
    .filter((l) => l.backingFile.startsWith('/var/lib/lhc/'))
    .map((l) => `${l.name} ${l.backingFile}`);
}

async function expectNothingLeft(): Promise<void> {
  expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
  expect(await boardLoops()).toEqual([]);
}

beforeAll(async () => {
  await requireTools(['systemd-nspawn', 'nsenter', 'losetup', 'mksquashfs', 'qemu-aarch64-static']);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-board-test-'));
  await testBoardTarball();
  gopher = await buildOut(await gophermoonConfig(), path.join(tmp, 'gopher'));
  await expectNothingLeft();
});

afterAll(async () => {
  if (!tmp) return;
  await sweepLeftovers(tmp);
  await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true, reject: false });
});

describe('lhc verify --board', () => {
  it('gophermoon: installed by install.sh, every probe through the board port 70 equals its fixture, hardened', async () => {
    const config = await gophermoonConfig();
    const report = await verifyOnBoard({
      config,
      outDir: gopher.outDir,
      logger: memoryLogger(),
      workDir: await mkdtemp(path.join(tmp, 'v-')),
    });
    expect(report.ok, formatBoardReport(report).join('\n')).toBe(true);
    expect(report.probes.map((p) => p.name)).toEqual([
      ...config.probes.map((p) => p.name),
      `${config.probes[0]!.name} (curl on the board)`,
    ]);
    expect(report.hardening.map((h) => [h.name, h.ok])).toEqual(
      report.hardening.map((h) => [h.name, true]),
    );
    expect(report.hardening.length).toBeGreaterThanOrEqual(6);
    await expectNothingLeft();
  });

  it('nginx: port 80 on the board reaches nginx in its private network through the proxy', async () => {
    const config = await loadConfig(NGINX_CONFIG);
    const nginx = await buildOut(config, path.join(tmp, 'nginx'));
    const report = await verifyOnBoard({
      config,
      outDir: nginx.outDir,
      logger: memoryLogger(),
      workDir: await mkdtemp(path.join(tmp, 'v-')),
    });
    expect(report.ok, formatBoardReport(report).join('\n')).toBe(true);
    const index = report.probes.find((p) => p.name === 'index (curl on the board)');
    expect(index?.bytes).toBe(readFileSync(config.probes[0]!.fixture!).length);
    expect(report.hardening.find((h) => h.name.includes('lo'))?.detail).toBe('interfaces: lo');
    await expectNothingLeft();
  });

  it('a unit with a wrong ExecStart path fails, with its journal in the report', async () => {
    const config = await gophermoonConfig();
    const out = path.join(tmp, 'broken-out');
    await cp(gopher.outDir, out, { recursive: true });
    const unit = path.join(out, 'deploy/gophermoon@.service');
    const text = await readFile(unit, 'utf8');
    expect(text).toContain('ExecStart=/usr/bin/systemd-nspawn ');
    await writeFile(
      unit,
      text.replace('ExecStart=/usr/bin/systemd-nspawn ', 'ExecStart=/usr/bin/no-such-nspawn '),
    );
    // Shipped that way: the checksums match, so only the board can tell.
    const listed = (await readFile(path.join(out, 'SHA256SUMS'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => l.slice(66));
    await writeSha256Sums(out, listed);
    const report = await verifyOnBoard({
      config: { ...config, probes: config.probes.slice(0, 2) },
      outDir: out,
      logger: memoryLogger(),
      workDir: await mkdtemp(path.join(tmp, 'v-')),
      requestTimeoutMs: 15_000,
    });
    expect(report.ok).toBe(false);
    expect(report.probes.every((p) => !p.ok)).toBe(true);
    const printed = formatBoardReport(report).join('\n');
    expect(printed).toMatch(/gophermoon@.*\.service/);
    expect(printed).toContain('/usr/bin/no-such-nspawn');
    await expectNothingLeft();
  });

  it('upgrade v1 -> v2 and rollback: each answers in turn, no request fails in between', async () => {
    const dir = path.join(tmp, 'v2');
    const { config: v2config, marker } = await gophermoonV2(path.join(tmp, 'v2src'));
    const v2 = await buildOut(v2config, dir);
    const config = await gophermoonConfig();
    const about = config.probes.find((p) => p.name === 'text-about') as GopherProbe;
    const v1Answer = await readFile(about.fixture);
    expect(v1Answer.toString()).not.toContain(marker);

    const board = await Board.boot({
      tarball: await testBoardTarball(),
      workDir: path.join(await mkdtemp(path.join(tmp, 'u-')), 'board'),
      logger: memoryLogger(),
    });
    const answers: Buffer[] = [];
    const failures: string[] = [];
    let stop = false;
    let loop: Promise<void> | undefined;
    const ask = (e: Endpoint) => exchange(e, gopherRequest(about.selector), { timeoutMs: 30_000 });
    try {
      await installOnBoard(board, gopher.outDir, 'install', config);
      const port = await openBoardPort(board, 70, tmp, memoryLogger());
      try {
        expect((await ask(port.endpoint)).equals(v1Answer)).toBe(true);
        // Requests one after another, for as long as the upgrade and the rollback take.
        loop = (async () => {
          while (!stop) {
            try {
              answers.push(await ask(port.endpoint));
            } catch (e) {
              failures.push((e as Error).message);
            }
          }
        })();
        await installOnBoard(board, v2.outDir, 'upgrade', config);
        const v2Answer = await ask(port.endpoint);
        expect(v2Answer.toString()).toContain(marker);
        await installOnBoard(board, v2.outDir, 'rollback', config);
        expect((await ask(port.endpoint)).equals(v1Answer)).toBe(true);
        // One previous release is kept: v2 is now the one to roll back to.
        const releases = await board.sh(['ls', '/var/lib/lhc/gophermoon/releases']);
        expect(releases.stdout.trim().split('\n')).toHaveLength(2);
        stop = true;
        await loop;
        expect(failures).toEqual([]);
        expect(answers.length).toBeGreaterThan(2);
        const wrong = answers.filter((a) => !a.equals(v1Answer) && !a.equals(v2Answer));
        expect(wrong.map((a) => a.toString().slice(0, 200))).toEqual([]);
        expect(answers.some((a) => a.equals(v2Answer))).toBe(true);
        // The container serving a connection now runs the rolled-back image, hardened as before.
        const rows = await boardHardening(board, config, port.endpoint, 30_000);
        expect(rows.filter((r) => !r.ok)).toEqual([]);
      } finally {
        stop = true;
        await loop;
        await port.close();
      }
      // Uninstall leaves the board as it was, and twice is as good as once.
      await installOnBoard(board, gopher.outDir, 'uninstall', config);
      await installOnBoard(board, gopher.outDir, 'uninstall', config);
      const units = await board.sh([
        'sh',
        '-c',
        'ls /etc/systemd/system | grep -c gophermoon || true',
      ]);
      expect(units.stdout.trim()).toBe('0');
    } finally {
      await board.poweroff();
    }
    await expectNothingLeft();
  });
});
