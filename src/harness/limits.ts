/**
 * service.limits for containers lhc starts itself (verify), on hosts where no systemd unit owns
 * the container's cgroup: nspawn's --property= needs systemd as PID 1. Each container run gets
 * its own cgroup v1 memory, pids and cpu child, made by a small host shell wrapper that moves
 * itself there and execs nspawn, so a per-connection container (systemd-socket-activate) is
 * bounded per connection, like the board's @.service.
 *
 * Only cgroup v1 controllers (the hybrid layout) are handled; on a pure cgroup v2 host the
 * limits are reported as not applied, and the rlimits nspawn sets (limitFlags) still hold.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../core/logger.js';
import { waitFor } from '../core/wait.js';
import { run } from '../tools/exec.js';
import type { ContainerLimits } from '../tools/nspawn.js';

const CGROUP_V1 = '/sys/fs/cgroup';

/** One cgroup dir per controller, under which each run makes its child. */
export interface LimitCgroups {
  memory: string;
  pids: string;
  /** Absent when the host has no cpu controller in v1. */
  cpu?: string;
}

/**
 * Moves the shell into fresh children of the given cgroups, sets their limits, and execs the
 * rest of argv. $$ names the children, so concurrent connections never share one.
 */
const WRAPPER = [
  'set -e',
  'm="$1/c$$"; p="$2/c$$"; c="$3"',
  'mkdir "$m" "$p"',
  'echo "$4" > "$m/memory.limit_in_bytes"',
  'echo "$5" > "$p/pids.max"',
  'if [ -n "$c" ]; then c="$c/c$$"; mkdir "$c"; echo 100000 > "$c/cpu.cfs_period_us"; echo "$6" > "$c/cpu.cfs_quota_us"; echo $$ > "$c/cgroup.procs"; fi',
  'echo $$ > "$m/cgroup.procs"',
  'echo $$ > "$p/cgroup.procs"',
  'shift 6',
  'exec "$@"',
].join('\n');

/** argv that runs `argv` inside per-run cgroups with the limits applied. */
export function limitedArgv(
  argv: readonly string[],
  cg: LimitCgroups,
  l: ContainerLimits,
): string[] {
  return [
    '/bin/sh',
    '-c',
    WRAPPER,
    'lhc-limits',
    cg.memory,
    cg.pids,
    cg.cpu ?? '',
    String(l.memory),
    String(l.tasks),
    String(l.cpu * 1000),
    ...argv,
  ];
}

/** Whether this host has the cgroup v1 controllers the wrapper needs. */
export function hasCgroupV1Limits(): boolean {
  return (
    (existsSync(path.join(CGROUP_V1, 'memory/memory.limit_in_bytes')) ||
      existsSync(path.join(CGROUP_V1, 'memory/cgroup.procs'))) &&
    existsSync(path.join(CGROUP_V1, 'pids/cgroup.procs'))
  );
}

/** Creates the parent cgroups for one verify run, named `name` (unique per run). */
export async function createLimitCgroups(name: string, logger?: Logger): Promise<LimitCgroups> {
  const cg: LimitCgroups = {
    memory: path.join(CGROUP_V1, 'memory', name),
    pids: path.join(CGROUP_V1, 'pids', name),
  };
  if (existsSync(path.join(CGROUP_V1, 'cpu/cpu.cfs_quota_us')))
    cg.cpu = path.join(CGROUP_V1, 'cpu', name);
  await run(['mkdir', cg.memory, cg.pids, ...(cg.cpu ? [cg.cpu] : [])], {
    privileged: true,
    logger,
  });
  return cg;
}

/**
 * Removes the run's cgroups once their processes are gone (rmdir of a cgroup with a live or
 * unreaped process fails with EBUSY, so it is retried for a few seconds).
 */
export async function removeLimitCgroups(cg: LimitCgroups, logger?: Logger): Promise<void> {
  const dirs = [cg.memory, cg.pids, ...(cg.cpu ? [cg.cpu] : [])].filter((d) => existsSync(d));
  if (!dirs.length) return;
  let last = '';
  const done = await waitFor(
    async () => {
      // Only directories: the control files in a cgroup cannot (and need not) be removed.
      const r = await run(['find', ...dirs, '-depth', '-type', 'd', '-delete'], {
        privileged: true,
        logger,
        reject: false,
      });
      last = r.stderr;
      return r.exitCode === 0 || undefined;
    },
    10_000,
    undefined,
    200,
  );
  if (!done) throw new Error(`could not remove cgroups ${dirs.join(', ')}: ${last.trim()}`);
}

/** The largest memory use and the number of OOM kills recorded in a run's cgroups. */
export async function memoryEvents(
  cg: LimitCgroups,
): Promise<{ children: number; oomKills: number }> {
  const { readdir, readFile } = await import('node:fs/promises');
  let children = 0;
  let oomKills = 0;
  for (const e of await readdir(cg.memory, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    children++;
    const oom = await readFile(path.join(cg.memory, e.name, 'memory.oom_control'), 'utf8');
    oomKills += Number(/^oom_kill (\d+)$/m.exec(oom)?.[1] ?? 0);
  }
  return { children, oomKills };
}
