/**
 * deploy.runtime: systemd on the simulated board: gophermoon's sandboxed service unit installed
 * by its own install.sh, every probe through the board's port 70 byte for byte against its
 * fixture, the hardening rows read from the live per-connection process (no nspawn anywhere);
 * connections served at once, each by a fresh process in the one sandbox, one of them surviving
 * a restart of the service (an upgrade); and install.sh switching a running nspawn install to
 * the systemd runtime and back, retiring the other runtime's units, with the per-connection
 * latency of both measured on the same board. A listen service (nginx, proxied)
 * under this runtime is board-systemd-listen.test.ts.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Board } from '../../src/board/machine.js';
import {
  allowEmulation,
  boardHardening,
  formatBoardReport,
  installOnBoard,
  openBoardPort,
  verifyOnBoard,
} from '../../src/board/verify-board.js';
import type { BuildResult } from '../../src/build-result.js';
import type { LhcConfig } from '../../src/config/load.js';
import type { GopherProbe } from '../../src/config/schema.js';
import { memoryLogger } from '../../src/core/logger.js';
import { exchange, gopherRequest } from '../../src/harness/client.js';
import { processTable } from '../../src/harness/proc.js';
import { holdOpen } from '../../src/harness/client.js';
import { waitFor } from '../../src/core/wait.js';
import { findServicePayloads } from '../../src/board/service-procs.js';
import { ACCEPT_PATH } from '../../src/accept/accept-elf.js';
import { run } from '../../src/tools/exec.js';
import { buildOut, gophermoonConfig, testBoardTarball } from '../support/board.js';
import { requireTools, snapshot, sweepLeftovers } from '../support/verify-image.js';

let tmp: string;
let nspawnConfig: LhcConfig;
let systemdConfig: LhcConfig;
let sandboxed: BuildResult;

beforeAll(async () => {
  await requireTools(['systemd-nspawn', 'nsenter', 'losetup', 'mksquashfs', 'qemu-aarch64-static']);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-board-systemd-'));
  await testBoardTarball();
  nspawnConfig = await gophermoonConfig();
  systemdConfig = { ...nspawnConfig, deploy: { ...nspawnConfig.deploy, runtime: 'systemd' } };
  sandboxed = await buildOut(systemdConfig, path.join(tmp, 'systemd'));
});

afterAll(async () => {
  if (!tmp) return;
  await sweepLeftovers(tmp);
  await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true, reject: false });
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

describe('lhc verify --board with deploy.runtime: systemd', () => {
  it('gophermoon: the sandboxed service answers every probe like its fixture, hardened', async () => {
    const unit = await readFile(path.join(sandboxed.outDir, 'deploy/gophermoon.service'), 'utf8');
    expect(unit).toContain(`ExecStart=${ACCEPT_PATH} 60 32 /bin/lua /bin/gophermoon\n`);
    expect(unit).not.toContain('nspawn');
    expect(sandboxed.exposure?.units.map((u) => u.unit)).toEqual(['gophermoon.service']);
    // The loop ships in the image; the nspawn runtime's image has none.
    const manifest = await readFile(
      path.join(sandboxed.outDir, 'gophermoon.manifest.json'),
      'utf8',
    );
    expect(manifest).toContain(`"${ACCEPT_PATH}"`);
    const report = await verifyOnBoard({
      config: systemdConfig,
      outDir: sandboxed.outDir,
      logger: memoryLogger(),
      workDir: await mkdtemp(path.join(tmp, 'v-')),
    });
    const printed = formatBoardReport(report).join('\n');
    expect(report.ok, printed).toBe(true);
    expect(report.probes.map((p) => p.name)).toEqual([
      ...systemdConfig.probes.map((p) => p.name),
      `${systemdConfig.probes[0]!.name} (curl on the board)`,
    ]);
    const rows = Object.fromEntries(report.hardening.map((h) => [h.name, h]));
    expect(Object.keys(rows)).toEqual([
      'root mounted read-only',
      '/data noexec,nosuid,nodev',
      '/tmp absent or noexec,nosuid,nodev',
      '/run absent or noexec,nosuid,nodev',
      '/dev/shm absent or noexec,nosuid,nodev',
      '/dev nosuid, noexec or capped at 4 MiB',
      'no network interface but lo',
      'NoNewPrivs set',
      'CAP_NET_ADMIN, CAP_SYS_ADMIN not in bounding set',
      'not root on the host, no way to become it',
    ]);
    expect(report.hardening.filter((h) => !h.ok)).toEqual([]);
    // The emulated payload is the one place the simulated board differs from the real one.
    expect(report.notes?.join('\n')).toContain('MemoryDenyWriteExecute=no');
    expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
  });

  it('install.sh switches a running nspawn install to the systemd runtime and back; latency of both', async () => {
    const nspawnOut = await buildOut(nspawnConfig, path.join(tmp, 'nspawn'));
    const about = nspawnConfig.probes.find((p) => p.name === 'text-about') as GopherProbe;
    const want = await readFile(about.fixture);
    const board = await Board.boot({
      tarball: await testBoardTarball(),
      workDir: path.join(await mkdtemp(path.join(tmp, 's-')), 'board'),
      logger: memoryLogger(),
    });
    const nspawnUnder = () =>
      [...processTable().values()].some(
        (p) => p.comm === 'systemd-nspawn' && p.ppid !== 0 && p.pid !== board.pid && isUnder(p.pid),
      );
    const isUnder = (pid: number): boolean => {
      const t = processTable();
      for (let p = t.get(pid); p; p = t.get(p.ppid)) if (p.pid === board.pid) return true;
      return false;
    };
    try {
      await allowEmulation(board, systemdConfig);
      await installOnBoard(board, nspawnOut.outDir, 'install', nspawnConfig);
      const port = await openBoardPort(board, 70, tmp, memoryLogger());
      const ask = () =>
        exchange(port.endpoint, gopherRequest(about.selector), { timeoutMs: 30_000 });
      const timed = async (n: number) => {
        const ms: number[] = [];
        for (let i = 0; i < n; i++) {
          const t = performance.now();
          expect((await ask()).equals(want)).toBe(true);
          ms.push(performance.now() - t);
        }
        return median(ms);
      };
      try {
        const unitDir = '/etc/systemd/system';
        const unitNow = (u: string) => board.sh(['cat', `${unitDir}/${u}`]);
        expect((await unitNow('gophermoon@.service')).stdout).toContain(
          'ExecStart=/usr/bin/systemd-nspawn ',
        );
        const nspawnMs = await timed(50);
        await installOnBoard(board, sandboxed.outDir, 'upgrade', systemdConfig);
        expect((await unitNow('gophermoon.service')).stdout).toContain(
          `ExecStart=${ACCEPT_PATH} 60 32 /bin/lua /bin/gophermoon\n`,
        );
        // The nspawn runtime's template is retired, not left beside the new unit.
        expect((await unitNow('gophermoon@.service')).exitCode).not.toBe(0);
        const id = await board.sh(['id', '-u', 'lhc-gophermoon']);
        expect(id.exitCode, id.stderr).toBe(0);
        const systemdMs = await timed(50);
        expect(nspawnUnder()).toBe(false);
        const rows = await boardHardening(board, systemdConfig, port.endpoint, 30_000);
        expect(rows.filter((r) => !r.ok)).toEqual([]);

        // Eight at once, each a process of its own in the one sandbox, as the fixture says.
        const payloadsSeen = new Set<number>();
        const watch = setInterval(() => {
          for (const p of findServicePayloads(board.pid, 'gophermoon')) payloadsSeen.add(p.pid);
        }, 5);
        try {
          const answers = await Promise.all(Array.from({ length: 16 }, () => ask()));
          expect(answers.filter((a) => !a.equals(want))).toEqual([]);
        } finally {
          clearInterval(watch);
        }
        expect(payloadsSeen.size).toBeGreaterThan(1);
        const main = await board.sh(['systemctl', 'show', '-P', 'MainPID', 'gophermoon.service']);
        expect(payloadsSeen.has(Number(main.stdout.trim()))).toBe(false);

        // A restart (what an upgrade does) drains: the loop stops accepting, the connection in
        // flight finishes, and one made meanwhile waits in the socket for the new loop.
        const held = await holdOpen(port.endpoint, 30_000);
        const answered = new Promise<Buffer>((resolve) => {
          const chunks: Buffer[] = [];
          held.on('data', (d: Buffer) => chunks.push(d));
          held.on('close', () => resolve(Buffer.concat(chunks)));
        });
        expect(
          await waitFor(() => findServicePayloads(board.pid, 'gophermoon')[0], 30_000),
        ).toBeDefined();
        const show = async (p: string) =>
          (await board.sh(['systemctl', 'show', '-P', p, 'gophermoon.service'])).stdout.trim();
        const oldMain = await show('MainPID');
        await board.mustSh(['systemctl', 'restart', '--no-block', 'gophermoon.service'], 'restart');
        const draining = async () =>
          (await show('ActiveState')) === 'deactivating' ? true : undefined;
        expect(await waitFor(draining, 30_000)).toBe(true);
        const meanwhile = ask();
        held.end(gopherRequest(about.selector));
        expect((await answered).equals(want)).toBe(true);
        expect((await meanwhile).equals(want)).toBe(true);
        expect(await show('ActiveState')).toBe('active');
        expect(await show('MainPID')).not.toBe(oldMain);

        await installOnBoard(board, sandboxed.outDir, 'rollback', systemdConfig);
        expect((await unitNow('gophermoon@.service')).stdout).toContain(
          'ExecStart=/usr/bin/systemd-nspawn ',
        );
        expect((await unitNow('gophermoon.service')).exitCode).not.toBe(0);
        const gone = await board.sh(['systemctl', 'is-active', 'gophermoon.service']);
        expect(gone.stdout.trim()).not.toBe('active');
        // The nspawn release's warm containers run again, waiting for their connections.
        const warm = await board.sh(['systemctl', 'is-active', 'gophermoon@warm1.service']);
        expect(warm.stdout.trim()).toBe('active');
        expect((await ask()).equals(want)).toBe(true);
        // Measured, not asserted: the machine is shared, so absolute times vary run to run.
        console.log(
          `board per-connection median over 50 sequential gopher requests: nspawn ${nspawnMs.toFixed(0)} ms, systemd ${systemdMs.toFixed(0)} ms`,
        );
      } finally {
        await port.close();
      }
    } finally {
      await board.poweroff();
    }
    expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
  });
});
