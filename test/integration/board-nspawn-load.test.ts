/**
 * The nspawn runtime under load on the simulated board: gophermoon installed by its own
 * install.sh, 8 connections at a time through the board's port 70, every answer byte for byte
 * its fixture and none failing. That needs what this runtime's unit does for concurrent
 * connections: each container its own machine name (the unit's invocation id; nspawn keeps host
 * state per name, which an ending container removes while a starting one binds it), no image
 * lock (a container ending takes it exclusively for a moment), and the service's own fixed uid
 * range instead of one picked under a global lock, with the payload still unprivileged on the
 * host and every hardening row as verify reads it. The containers are warm (started before their
 * connection): each still serves exactly one connection, counted by the instances' restarts.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Board } from '../../src/board/machine.js';
import { boardHardening, installOnBoard, openBoardPort } from '../../src/board/verify-board.js';
import type { BuildResult } from '../../src/build-result.js';
import type { LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { descendants, findPayloads } from '../../src/harness/proc.js';
import { run } from '../../src/tools/exec.js';
import { SERVICE_UID_POOL, serviceUidBase } from '../../src/tools/nspawn.js';
import { runLoad } from '../../src/verify/load.js';
import { waitFor } from '../../src/core/wait.js';
import { probeOnce, readFixtures } from '../../src/verify/probes.js';
import { buildOut, gophermoonConfig, testBoardTarball } from '../support/board.js';
import { requireTools, snapshot, sweepLeftovers } from '../support/verify-image.js';

const REQUESTS = 240;
const CONCURRENCY = 8;

let tmp: string;
let config: LhcConfig;
let gopher: BuildResult;

beforeAll(async () => {
  await requireTools(['systemd-nspawn', 'nsenter', 'losetup', 'mksquashfs', 'qemu-aarch64-static']);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-board-load-'));
  await testBoardTarball();
  config = await gophermoonConfig();
  gopher = await buildOut(config, path.join(tmp, 'gopher'));
});

afterAll(async () => {
  if (!tmp) return;
  await sweepLeftovers(tmp);
  await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true, reject: false });
});

/** The argv of every systemd-nspawn process under the board right now. */
function nspawnArgvs(boardPid: number): string[][] {
  const out: string[][] = [];
  for (const p of descendants(boardPid).filter((x) => x.comm === 'systemd-nspawn')) {
    try {
      out.push(readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0').filter(Boolean));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

describe('the nspawn runtime on the board, 8 connections at a time', () => {
  it('answers every request like its fixture, each container with its own machine name and the service uid range', async () => {
    const board = await Board.boot({
      tarball: await testBoardTarball(),
      workDir: path.join(tmp, 'board'),
      logger: memoryLogger(),
    });
    try {
      await installOnBoard(board, gopher.outDir, 'install', config);
      const unit = await board.sh(['cat', '/etc/systemd/system/gophermoon@.service']);
      expect(unit.stdout).toMatch(/^Environment=SYSTEMD_NSPAWN_LOCK=0$/m);
      const port = await openBoardPort(board, 70, tmp, memoryLogger());
      const fixtures = await readFixtures(config.probes);
      // Machine names of the containers seen while the load runs, sampled every few ms.
      const names = new Set<string>();
      const atOnce: number[] = [];
      const hostUids = new Set<number>();
      let picked = false;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const argvs = nspawnArgvs(board.pid);
          if (argvs.some((a) => a.includes('-U'))) picked = true;
          const live = argvs
            .map((a) => a.find((w) => w.startsWith('--machine='))?.slice('--machine='.length))
            .filter((n): n is string => n !== undefined);
          // The payloads' real, effective, saved and file-system uids as the host sees them.
          for (const p of findPayloads(board.pid)) {
            try {
              const uids = /^Uid:\s+(.*)$/m.exec(
                readFileSync(`/proc/${p.pid}/status`, 'utf8'),
              )![1]!;
              for (const u of uids.trim().split(/\s+/)) hostUids.add(Number(u));
            } catch {
              // Gone meanwhile.
            }
          }
          // nspawn's outer child shares its parent's argv: one name per container.
          const distinct = new Set(live);
          for (const n of distinct) names.add(n);
          atOnce.push(distinct.size);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      // Each warm container serves one connection and is started again: the instances' restarts
      // count the containers that served a connection.
      const restarts = async () => {
        let n = 0;
        for (let i = 1; i <= config.deploy['warm-containers']; i++) {
          const r = await board.mustSh(
            ['systemctl', 'show', '-P', 'NRestarts', `gophermoon@warm${i}.service`],
            'systemctl show',
          );
          n += Number(r.stdout.trim());
        }
        return n;
      };
      const restartsBefore = await restarts();
      let load;
      try {
        load = await runLoad(REQUESTS, CONCURRENCY, async (i) => {
          const p = config.probes[i % config.probes.length]!;
          const { outcome } = await probeOnce(p, fixtures.get(p.name), port.endpoint, 30_000);
          return outcome.ok ? undefined : `${p.name}: ${outcome.diff ?? 'failed'}`;
        });
      } finally {
        sampling = false;
        await sampler;
      }
      const journal = await board.sh([
        'journalctl',
        '--no-pager',
        '-q',
        '-u',
        'gophermoon@*',
        '-u',
        'gophermoon.socket',
        '-p',
        'warning',
      ]);
      expect(
        load.failures,
        `${load.firstFailure}\n${journal.stdout.split('\n').slice(-30).join('\n')}`,
      ).toBe(0);
      // None of the start-up races this unit avoids left a trace.
      expect(journal.stdout).not.toMatch(/currently busy|propagate|Too many incoming/);
      // A container per connection: as many ended (and were replaced) as requests were answered.
      expect(config.deploy['warm-containers']).toBeGreaterThan(0);
      await waitFor(
        async () => ((await restarts()) - restartsBefore >= REQUESTS ? true : undefined),
        30_000,
      );
      expect((await restarts()) - restartsBefore).toBe(REQUESTS);

      // Every container had a name of its own: lhc-gophermoon- and the instance's invocation id.
      expect(names.size).toBeGreaterThan(CONCURRENCY);
      for (const n of names) expect(n).toMatch(/^lhc-gophermoon-[0-9a-f]{32}$/);
      expect(Math.max(...atOnce)).toBeGreaterThan(1);

      // Not one container picked a range: all ran in the service's own, never as root on the host.
      expect(picked).toBe(false);
      const base = serviceUidBase(config.name);
      expect(hostUids.size).toBeGreaterThan(0);
      for (const u of hostUids) {
        expect(u).toBeGreaterThanOrEqual(base);
        expect(u).toBeLessThan(base + SERVICE_UID_POOL.size);
      }
      // A live container as verify reads it: every hardening row, uid 0 inside the range's first.
      const rows = await boardHardening(board, config, port.endpoint, 30_000);
      expect(rows.filter((r) => !r.ok)).toEqual([]);
      expect(rows.find((r) => r.name === 'uid 0 inside is not 0 outside')?.detail).toBe(
        `uid 0 → host uid ${base} (${SERVICE_UID_POOL.size} ids)`,
      );
      await port.close();
    } finally {
      await board.poweroff();
    }
    // Payloads of the board are gone with it.
    expect(findPayloads(process.pid)).toEqual([]);
    expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
  });
});
