/**
 * Probes in parallel (issue 16): the traced run with several containers at once answers and
 * records exactly what the one-at-a-time run does, every probe's container traced, and the
 * responses come back in config order. Real runs: busybox:arm64 in systemd-nspawn under QEMU.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { runProbes } from '../../src/harness/run.js';
import { NSPAWN_STATE_DIRS } from '../../src/harness/machine-name.js';
import { traceService, type TraceResult } from '../../src/stages/trace.js';
import { busyboxRoot } from '../support/busybox-root.js';
import { requireTool } from '../support/require-tool.js';

let tmp: string;
let bbRoot: string;

async function config(name: string, yaml: string): Promise<LhcConfig> {
  const dir = path.join(tmp, 'configs', name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'lhc.yml'), `name: ${name}\n${yaml}`);
  return loadConfig(path.join(dir, 'lhc.yml'));
}

function trace(cfg: LhcConfig, dir: string, parallel: number): Promise<TraceResult> {
  const ctx = stageContext({ logger: memoryLogger(), workDir: path.join(tmp, dir) });
  return traceService(ctx, { config: cfg, root: bbRoot, parallel });
}

/** What the trace proves, without the run-specific parts (pids, order across runs). */
function accesses(t: TraceResult): string[] {
  const seen = new Set(t.events.map((e) => `${e.op} ${e.path} ${e.result} ${e.write ? 'w' : 'r'}`));
  return [...seen].sort();
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (systemd-nspawn)');
  for (const tool of ['systemd-nspawn', 'qemu-aarch64-static', 'nsenter', 'mkfifo'])
    await requireTool(tool);
  if (!existsSync('/proc/sys/fs/binfmt_misc/qemu-aarch64'))
    throw new Error('binfmt_misc has no qemu-aarch64 entry: run `lhc setup`');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-parallel-probes-'));
  bbRoot = await busyboxRoot(path.join(tmp, 'busybox-root'));
}, 600_000);

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('traced run, probes in parallel', () => {
  it('inetd: the same responses, in config order, and every container traced', async () => {
    // Each container echoes its own request line, so a response mixed up between runs shows.
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    const cfg = await config(
      'bb-echo',
      'service: { command: [/bin/busybox, head, -n, "1"], inetd: true }\nprobes:\n' +
        names
          .map((n) => `  - { name: ${n}, type: gopher, selector: "/${n}", fixture: x }\n`)
          .join(''),
    );
    const sequential = await trace(cfg, 'seq', 1);
    const parallel = await trace(cfg, 'par', 4);
    expect(Object.keys(parallel.responses)).toEqual(names);
    expect(Object.keys(sequential.responses)).toEqual(names);
    for (const n of names) expect(parallel.responses[n]!.body.toString()).toBe(`/${n}\r\n`);
    expect(parallel.responses).toEqual(sequential.responses);
    // One trace per container run, none lost or merged.
    const runs = (t: TraceResult) => t.traceFiles.filter((f) => /qemu\.\d+\.txt$/.test(f));
    expect(runs(parallel)).toHaveLength(names.length);
    expect(runs(sequential)).toHaveLength(names.length);
    expect(accesses(parallel)).toEqual(accesses(sequential));
  }, 600_000);

  // A traced listening service gets its probes one at a time (its processes share one trace
  // stream); this holds it to that: nothing of the trace may go missing.
  it('listen: the same responses, statuses and traced accesses, in config order', async () => {
    const probes = [
      ['index', '/index.html', 200],
      ['missing', '/nope.html', 404],
      ['unused', '/unused.html', 200],
      ['again', '/index.html', 200],
    ] as const;
    const cfg = await config(
      'bb-httpd',
      'service: { command: [/usr/sbin/httpd, -f, -p, "8080", -h, /www], listen: 8080, timeout: 60 }\nprobes:\n' +
        probes
          .map(([n, p, s]) => `  - { name: ${n}, type: http, path: ${p}, status: ${s} }\n`)
          .join(''),
    );
    const sequential = await trace(cfg, 'seq-httpd', 1);
    const parallel = await trace(cfg, 'par-httpd', 4);
    expect(Object.keys(parallel.responses)).toEqual(probes.map(([n]) => n));
    expect(parallel.responses).toEqual(sequential.responses);
    expect(probes.map(([n]) => parallel.responses[n]!.status)).toEqual(probes.map(([, , s]) => s));
    expect(accesses(parallel)).toEqual(accesses(sequential));
  }, 600_000);

  // Concurrent containers must not share a machine name (nspawn keys its host state by it), but
  // keep the run's hostname, so a service that prints it answers the same in every container.
  it('inetd: each parallel container its own machine name, one hostname, state dirs released', async () => {
    const names = ['a', 'b', 'c', 'd'];
    const cfg = await config(
      'bb-hostname',
      'service: { command: [/bin/busybox, hostname], inetd: true }\nprobes:\n' +
        names
          .map((n) => `  - { name: ${n}, type: gopher, selector: "/${n}", fixture: x }\n`)
          .join(''),
    );
    const dataDir = path.join(tmp, 'hostname-data');
    await mkdir(dataDir, { recursive: true });
    const argvs: string[][] = [];
    const flag = (argv: string[], f: string) =>
      argv.find((a) => a.startsWith(`--${f}=`))?.slice(f.length + 3);
    const r = await runProbes(
      cfg,
      { root: bbRoot, dataDir, readOnly: false, harden: false },
      {
        workDir: tmp,
        logger: memoryLogger(),
        parallel: 4,
        hook: {
          begin: async (argv) => {
            argvs.push(argv);
            return { argv, end: async () => ({ text: '' }) };
          },
        },
      },
    );
    const machines = argvs.map((a) => flag(a, 'machine'));
    expect(machines).toHaveLength(names.length);
    expect(new Set(machines).size).toBe(names.length);
    const hostnames = new Set(argvs.map((a) => flag(a, 'hostname')));
    expect(hostnames.size).toBe(1);
    for (const n of names) expect(r.responses[n]!.body.toString()).toBe(`${[...hostnames][0]}\n`);
    for (const m of machines)
      for (const d of NSPAWN_STATE_DIRS) expect(existsSync(path.join(d, m!))).toBe(false);
  }, 600_000);
});
