/**
 * The board's container command line (boardNspawnArgv) on a real aarch64 busybox root under
 * QEMU, run the way verify runs it on this host (per-run cgroups from harness/limits.ts):
 * nothing copied into /tmp, /run or /dev/shm can run, a payload that allocates past its memory
 * limit is OOM-killed, one that forks past its task limit is refused, and the host (this test
 * process, the next container) carries on.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../src/config/schema.js';
import {
  createLimitCgroups,
  hasCgroupV1Limits,
  limitedArgv,
  memoryEvents,
  removeLimitCgroups,
  type LimitCgroups,
} from '../../src/harness/limits.js';
import { run } from '../../src/tools/exec.js';
import { boardNspawnArgv, mountPoints, type ContainerLimits } from '../../src/tools/nspawn.js';
import { busyboxRoot } from '../support/busybox-root.js';
import { requireTool } from '../support/require-tool.js';

let tmp: string;
let root: string;
let dataDir: string;
let cgroups: LimitCgroups;

const LIMITS: ContainerLimits = { memory: 64 * 1024 ** 2, tasks: 16, cpu: 100, nofile: 256 };

beforeAll(async () => {
  await requireTool('systemd-nspawn');
  if (!hasCgroupV1Limits())
    throw new Error(
      'this test needs the cgroup v1 memory and pids controllers (/sys/fs/cgroup/memory, /sys/fs/cgroup/pids)',
    );
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-limits-'));
  root = await busyboxRoot(path.join(tmp, 'root'));
  for (const d of mountPoints('/data')) await mkdir(path.join(root, d), { recursive: true });
  dataDir = path.join(tmp, 'data');
  await mkdir(dataDir);
  cgroups = await createLimitCgroups(`lhc-limits-test-${process.pid}`);
}, 120_000);

afterAll(async () => {
  if (cgroups) await removeLimitCgroups(cgroups);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** Runs a busybox shell script as the board's payload, bounded like verify bounds it. */
async function payload(script: string, limits: ContainerLimits = LIMITS) {
  const argv = boardNspawnArgv({
    root,
    dataDir,
    dataPath: '/data',
    command: ['/bin/sh', '-c', script],
    limits,
    service: 'limits-test',
  });
  return run(limitedArgv(argv, cgroups, limits), { reject: false, timeoutMs: 120_000 });
}

describe('scratch mounts in the board container', () => {
  it('a busybox copied into /tmp, /run or /dev/shm cannot run; /data is writable', async () => {
    const r = await payload(
      'for d in /tmp /run /dev/shm; do cp /bin/busybox $d/bb && echo wrote $d; $d/bb true 2>/dev/null; echo "$d exit $?"; done; echo x > /data/x && echo data ok',
    );
    for (const d of ['/tmp', '/run', '/dev/shm']) {
      // Writable (services keep pid and temp files there) but exec fails: 126, permission denied.
      expect(r.stdout).toContain(`wrote ${d}`);
      expect(r.stdout).toContain(`${d} exit 126`);
    }
    expect(r.stdout).toContain('data ok');
  }, 120_000);
});

describe('resource limits', () => {
  it('sets the open-files and process rlimits inside the container', async () => {
    const r = await payload('ulimit -n; ulimit -u');
    expect(r.stdout.trim().split('\n')).toEqual([String(LIMITS.nofile), String(LIMITS.tasks)]);
  }, 120_000);

  it('OOM-kills a payload that allocates past the memory limit; the host carries on', async () => {
    const before = await memoryEvents(cgroups);
    // 200 MB held in a shell variable: three times the 64M limit.
    const r = await payload('x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo "held ${#x}"');
    expect(r.stdout).not.toContain('held');
    expect(r.exitCode).not.toBe(0);
    const after = await memoryEvents(cgroups);
    expect(after.children).toBe(before.children + 1);
    expect(after.oomKills).toBeGreaterThan(before.oomKills);
    // The host is fine: the next container with the same limits runs normally.
    const next = await payload('echo still here');
    expect(next.stdout.trim()).toBe('still here');
  }, 180_000);

  it('refuses forks past the task limit; the host carries on', async () => {
    const r = await payload(
      'i=0; while [ $i -lt 100 ]; do sleep 3 & i=$((i+1)); done; echo "forked $i"',
    );
    expect(r.stdout).not.toContain('forked 100');
    expect(r.stderr).toMatch(/can't fork|Resource temporarily unavailable/);
    const next = await payload('echo still here');
    expect(next.stdout.trim()).toBe('still here');
  }, 180_000);

  it('the defaults are what the board gets: 256M, 64 tasks, 100 % cpu, 1024 files', () => {
    expect(DEFAULT_LIMITS).toEqual({ memory: 256 * 1024 ** 2, tasks: 64, cpu: 100, nofile: 1024 });
  });
});
