/**
 * service.limits on both cgroup layouts, on fake /sys/fs/cgroup trees: which layout is found (or
 * why none can be used), and the wrappers really run against a tree of plain files, writing the
 * limits where the kernel would read them and moving themselves in before exec'ing the command.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  cgroupLayout,
  createLimitCgroups,
  limitedArgv,
  type LimitCgroups,
} from '../../src/harness/limits.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lhc-cgroup-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function tree(name: string, files: Record<string, string>): string {
  const root = path.join(tmp, name);
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    writeFileSync(path.join(root, f), text);
  }
  mkdirSync(root, { recursive: true });
  return root;
}

const LIMITS = { memory: 64 * 1024 * 1024, tasks: 32, cpu: 50, nofile: 256 };

/** Runs the wrapper for `cg` with a command that prints its pid; returns the pid and the run's child dir. */
function runWrapper(cg: LimitCgroups, parent: string): { pid: string; child: string } {
  const argv = limitedArgv(['/bin/sh', '-c', 'echo $$'], cg, LIMITS);
  const pid = execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).trim();
  const children = readdirSync(parent).filter((n) => /^c\d+$/.test(n));
  expect(children).toEqual([`c${pid}`]);
  return { pid, child: path.join(parent, `c${pid}`) };
}

describe('cgroupLayout', () => {
  it('finds the v1 hierarchies (with or without cpu)', () => {
    const root = tree('v1', {
      'memory/memory.limit_in_bytes': '',
      'pids/cgroup.procs': '',
      'cpu/cpu.cfs_quota_us': '',
    });
    expect(cgroupLayout(root)).toEqual({ kind: 'v1', cpu: true });
    const noCpu = tree('v1-nocpu', { 'memory/cgroup.procs': '', 'pids/cgroup.procs': '' });
    expect(cgroupLayout(noCpu)).toEqual({ kind: 'v1', cpu: false });
  });

  it('finds a unified v2 tree that enables memory and pids for children', () => {
    const root = tree('v2', {
      'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
      'cgroup.subtree_control': 'cpu io memory pids\n',
    });
    expect(cgroupLayout(root)).toEqual({ kind: 'v2', cpu: true });
  });

  it('says why a v2 tree cannot be used and how to enable what is missing', () => {
    const root = tree('v2-nopids', {
      'cgroup.controllers': 'cpu memory pids\n',
      'cgroup.subtree_control': 'memory\n',
    });
    const l = cgroupLayout(root);
    expect(l.kind).toBe('none');
    expect(l.kind === 'none' && l.why).toBe(
      `cgroup v2 at ${root} does not enable pids for child cgroups (${root}/cgroup.subtree_control holds "memory"; enable with: echo +pids > ${root}/cgroup.subtree_control)`,
    );
    const noKernel = tree('v2-nomem', {
      'cgroup.controllers': 'cpu pids\n',
      'cgroup.subtree_control': 'cpu pids\n',
    });
    const k = cgroupLayout(noKernel);
    expect(k.kind === 'none' && k.why).toMatch(
      /does not enable memory .*the kernel does not offer it/,
    );
  });

  it('says so when there is no cgroup file system at all', () => {
    const l = cgroupLayout(tree('empty', {}));
    expect(l.kind === 'none' && l.why).toMatch(
      /no cgroup v1 memory and pids hierarchies and no cgroup v2 tree/,
    );
  });
});

describe('the wrappers on a fake tree', () => {
  it('v2: creates the parent with controllers enabled, writes memory.max, pids.max, cpu.max, joins, execs', async () => {
    const root = tree('v2-run', {
      'cgroup.controllers': 'cpu memory pids\n',
      'cgroup.subtree_control': 'cpu memory pids\n',
    });
    const cg = await createLimitCgroups('lhc-test', undefined, root);
    expect(cg).toEqual({ kind: 'v2', dir: path.join(root, 'lhc-test'), cpu: true });
    expect(readFileSync(path.join(root, 'lhc-test/cgroup.subtree_control'), 'utf8')).toBe(
      '+memory +pids +cpu\n',
    );
    const { pid, child } = runWrapper(cg, path.join(root, 'lhc-test'));
    const read = (f: string) => readFileSync(path.join(child, f), 'utf8');
    expect(read('memory.max')).toBe(`${LIMITS.memory}\n`);
    expect(read('pids.max')).toBe('32\n');
    expect(read('cpu.max')).toBe('50000 100000\n');
    expect(read('cgroup.procs')).toBe(`${pid}\n`);
  });

  it('v1: one child per controller, each with its limit and the process', async () => {
    const root = tree('v1-run', {
      'memory/cgroup.procs': '',
      'pids/cgroup.procs': '',
      'cpu/cpu.cfs_quota_us': '',
    });
    const cg = await createLimitCgroups('lhc-test', undefined, root);
    const { pid } = runWrapper(cg, path.join(root, 'memory/lhc-test'));
    const read = (f: string) => readFileSync(path.join(root, f), 'utf8');
    expect(read(`memory/lhc-test/c${pid}/memory.limit_in_bytes`)).toBe(`${LIMITS.memory}\n`);
    expect(read(`pids/lhc-test/c${pid}/pids.max`)).toBe('32\n');
    expect(read(`cpu/lhc-test/c${pid}/cpu.cfs_quota_us`)).toBe('50000\n');
    expect(read(`pids/lhc-test/c${pid}/cgroup.procs`)).toBe(`${pid}\n`);
  });

  it('refuses to create cgroups where the layout cannot hold the limits, saying why', async () => {
    const root = tree('v2-refuse', {
      'cgroup.controllers': 'memory pids\n',
      'cgroup.subtree_control': '\n',
    });
    await expect(createLimitCgroups('lhc-test', undefined, root)).rejects.toThrow(
      /service.limits cannot be applied here: cgroup v2 .* does not enable memory and pids/,
    );
  });
});
