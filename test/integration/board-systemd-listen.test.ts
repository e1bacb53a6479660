/**
 * deploy.runtime: systemd for a `listen` service on the simulated board: examples/nginx built
 * with the systemd runtime, installed by its own install.sh, every probe through the board's port
 * 80 (systemd-socket-proxyd in the service's private network) against its fixture, and the same
 * hardening rows as the inetd case, read from the live daemon. Then, on a board of its own: the
 * port limit is lowered in the service's network namespace only (the board's stays 1024), nginx
 * and the proxy share that namespace, the board is not in it, and nginx answers again after a
 * restart of its unit; and install.sh switching a running nspawn nginx to this runtime and back.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, readlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Board } from '../../src/board/machine.js';
import { findServicePayloads } from '../../src/board/service-procs.js';
import {
  allowEmulation,
  formatBoardReport,
  installOnBoard,
  openBoardPort,
  probeBoard,
  type BoardPort,
  verifyOnBoard,
} from '../../src/board/verify-board.js';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { EXPOSURE_GOAL } from '../../src/deploy/exposure.js';
import { UNPRIVILEGED_PORT_START } from '../../src/deploy/listen-proxy.js';
import { descendants } from '../../src/harness/proc.js';
import { run } from '../../src/tools/exec.js';
import { NGINX_CONFIG, buildOut, testBoardTarball } from '../support/board.js';
import { requireTools, snapshot, sweepLeftovers } from '../support/verify-image.js';

let tmp: string;
let config: LhcConfig;
let sandboxed: BuildResult;

beforeAll(async () => {
  await requireTools(['systemd-nspawn', 'nsenter', 'losetup', 'mksquashfs', 'qemu-aarch64-static']);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-board-systemd-listen-'));
  await testBoardTarball();
  const nginx = await loadConfig(NGINX_CONFIG);
  config = { ...nginx, deploy: { ...nginx.deploy, runtime: 'systemd' } };
  const t = performance.now();
  sandboxed = await buildOut(config, path.join(tmp, 'nginx'));
  console.log(
    `nginx, runtime systemd: build ${((performance.now() - t) / 1000).toFixed(1)} s; exposure ` +
      (sandboxed.exposure?.units.map((u) => `${u.unit} ${u.score} ${u.level}`).join(', ') ?? '-'),
  );
}, 1_800_000);

afterAll(async () => {
  if (!tmp) return;
  await sweepLeftovers(tmp);
  await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true, reject: false });
});

/** The value of ip_unprivileged_port_start in the network namespace of a host pid. */
async function portStartIn(pid: number): Promise<number> {
  const r = await run(['nsenter', '-t', String(pid), '-n', '--', 'cat', UNPRIVILEGED_PORT_START], {
    privileged: true,
  });
  return Number(r.stdout.trim());
}

const netns = (pid: number) => readlink(`/proc/${pid}/ns/net`);

/**
 * A board of its own with `out` installed (config's runtime), port 80 bridged from a directory of
 * its own (a bridge socket left by an earlier board would stand in for this one's); powered off
 * after `fn`, and nothing may be left on the host.
 */
async function onBoard(
  out: BuildResult,
  installed: LhcConfig,
  fn: (board: Board, port: BoardPort) => Promise<void>,
): Promise<void> {
  const board = await Board.boot({
    tarball: await testBoardTarball(),
    workDir: path.join(await mkdtemp(path.join(tmp, 'b-')), 'board'),
    logger: memoryLogger(),
  });
  try {
    await allowEmulation(board, config);
    await installOnBoard(board, out.outDir, 'install', installed);
    const port = await openBoardPort(
      board,
      80,
      await mkdtemp(path.join(tmp, 'p-')),
      memoryLogger(),
    );
    try {
      await fn(board, port);
    } finally {
      await port.close();
    }
  } finally {
    await board.poweroff();
  }
  expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
}

describe('lhc verify --board with deploy.runtime: systemd, a listen service', () => {
  it('nginx: port 80 on the board reaches the sandboxed nginx through the proxy, every probe like its fixture, hardened', async () => {
    const unit = await readFile(path.join(sandboxed.outDir, 'deploy/nginx.service'), 'utf8');
    expect(unit).toContain('ExecStart=/usr/sbin/nginx -e /data/error.log -g "daemon off;"\n');
    expect(unit).toContain('RootDirectoryStartOnly=yes\n');
    expect(unit).not.toContain('nspawn');
    const scores = sandboxed.exposure?.units ?? [];
    expect(scores.map((u) => u.unit)).toEqual(['nginx.service', 'nginx-proxy.service']);
    for (const u of scores) expect(u.score, u.unit).toBeLessThanOrEqual(EXPOSURE_GOAL);

    const report = await verifyOnBoard({
      config,
      outDir: sandboxed.outDir,
      logger: memoryLogger(),
      workDir: await mkdtemp(path.join(tmp, 'v-')),
    });
    const printed = formatBoardReport(report).join('\n');
    expect(report.ok, printed).toBe(true);
    expect(report.probes.map((p) => p.name)).toEqual([
      ...config.probes.map((p) => p.name),
      `${config.probes[0]!.name} (curl on the board)`,
    ]);
    const index = report.probes.find((p) => p.name === 'index (curl on the board)');
    expect(index?.bytes).toBe(readFileSync(config.probes[0]!.fixture!).length);
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
    expect(rows['no network interface but lo']?.detail).toBe('interfaces: lo');
    expect(report.notes?.join('\n')).toContain('MemoryDenyWriteExecute=no');
    console.log(`nginx, runtime systemd, on the board:\n${printed}`);
    expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
  });

  it("lowers the port limit in the service's network namespace only; nginx answers again after a restart", async () => {
    await onBoard(sandboxed, config, async (board, port) => {
      const probeAll = async () => {
        const { outcomes } = await probeBoard(config, port.endpoint, 60_000);
        expect(outcomes.filter((o) => !o.ok)).toEqual([]);
        expect(outcomes).toHaveLength(config.probes.length);
      };
      await probeAll();
      const payloads = findServicePayloads(board.pid, config.name);
      expect(payloads.length).toBeGreaterThan(0);
      const daemon = payloads[0]!.pid;
      const proxy = descendants(board.pid).find((p) => p.comm.startsWith('systemd-socket-'));
      expect(proxy, 'systemd-socket-proxyd on the board').toBeDefined();
      expect(await netns(proxy!.pid)).toBe(await netns(daemon));
      expect(await netns(daemon)).not.toBe(await netns(board.pid));
      expect(await portStartIn(daemon)).toBe(0);
      // The board's own network namespace keeps the kernel's default.
      expect(await portStartIn(board.pid)).toBe(1024);
      const uid = await board.sh(['id', '-u', `lhc-${config.name}`]);
      expect(uid.exitCode, uid.stderr).toBe(0);
      const status = readFileSync(`/proc/${daemon}/status`, 'utf8');
      expect(status).toMatch(/^CapEff:\s+0+$/m);
      expect(status).not.toMatch(/^Uid:\s+0\s/m);

      const restart = await board.sh(['systemctl', 'restart', 'nginx.service']);
      expect(restart.exitCode, restart.stderr).toBe(0);
      await probeAll();
      const again = findServicePayloads(board.pid, config.name)[0]!.pid;
      expect(again).not.toBe(daemon);
      expect(await portStartIn(again)).toBe(0);
      expect(await portStartIn(board.pid)).toBe(1024);
    });
  });

  it('install.sh switches a running nspawn nginx to the systemd runtime and back; latency of both', async () => {
    const nspawnConfig: LhcConfig = { ...config, deploy: { ...config.deploy, runtime: 'nspawn' } };
    const nspawnOut = await buildOut(nspawnConfig, path.join(tmp, 'nginx-nspawn'));
    await onBoard(nspawnOut, nspawnConfig, async (board, port) => {
      /** Every probe `rounds` times; the median of the first probe's latency. */
      const probed = async (rounds: number) => {
        const ms: number[] = [];
        for (let i = 0; i < rounds; i++) {
          const r = await probeBoard(config, port.endpoint, 60_000);
          expect(r.outcomes.filter((o) => !o.ok)).toEqual([]);
          ms.push(r.ms[0]!);
        }
        return ms.sort((a, b) => a - b)[Math.floor(ms.length / 2)]!;
      };
      const nspawnRuns = () => descendants(board.pid).some((p) => p.comm === 'systemd-nspawn');
      const unitNow = async () =>
        (await board.sh(['cat', '/etc/systemd/system/nginx.service'])).stdout;
      expect(await unitNow()).toContain('ExecStart=/usr/bin/systemd-nspawn ');
      await probed(1);
      expect(nspawnRuns()).toBe(true);
      const nspawnMs = await probed(20);
      await installOnBoard(board, sandboxed.outDir, 'upgrade', config);
      expect(await unitNow()).toContain('RootDirectoryStartOnly=yes\n');
      const systemdMs = await probed(20);
      expect(nspawnRuns()).toBe(false);
      await installOnBoard(board, sandboxed.outDir, 'rollback', config);
      expect(await unitNow()).toContain('ExecStart=/usr/bin/systemd-nspawn ');
      await probed(1);
      // Measured, not asserted: the machine is shared, so absolute times vary run to run.
      console.log(
        `board nginx, median of 20 GET / (a new connection each, to the running daemon): nspawn ${nspawnMs.toFixed(0)} ms, systemd ${systemdMs.toFixed(0)} ms`,
      );
    });
  });
});
