/**
 * service.limits for containers lhc starts itself (verify), on hosts where no systemd unit owns
 * the container's cgroup: nspawn's --property= needs systemd as PID 1. Each container run gets
 * cgroups of its own, made by a small host shell wrapper that moves itself there and execs
 * nspawn, so a per-connection container (systemd-socket-activate) is bounded per connection,
 * like the board's @.service.
 *
 * Both layouts are handled: cgroup v1 controllers (memory, pids, cpu hierarchies, the hybrid
 * layout) and the unified cgroup v2 tree (memory.max, pids.max, cpu.max, with the controllers
 * enabled for children of the root). Where neither is usable, cgroupLayout() says why, and the
 * rlimits nspawn sets (limitFlags) still hold.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../core/logger.js';
import { waitFor } from '../core/wait.js';
import { run } from '../tools/exec.js';
import type { ContainerLimits } from '../tools/nspawn.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** cgroup v1: one cgroup dir per controller, under which each run makes its child. */
export interface V1LimitCgroups {
  kind?: 'v1';
  memory: string;
  pids: string;
  /** Absent when the host has no cpu controller in v1. */
  cpu?: string;
}

/** cgroup v2: one dir in the unified tree, its controllers enabled for the runs' children. */
export interface V2LimitCgroup {
  kind: 'v2';
  dir: string;
  cpu: boolean;
}

export type LimitCgroups = V1LimitCgroups | V2LimitCgroup;

export type CgroupLayout =
  { kind: 'v1'; cpu: boolean } | { kind: 'v2'; cpu: boolean } | { kind: 'none'; why: string };

function words(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').trim().split(/\s+/);
  } catch {
    return [];
  }
}

/** Which cgroup layout this host offers for per-run limits, read from `root` (a test passes a fake tree). */
export function cgroupLayout(root: string = CGROUP_ROOT): CgroupLayout {
  const v1 =
    (existsSync(path.join(root, 'memory/memory.limit_in_bytes')) ||
      existsSync(path.join(root, 'memory/cgroup.procs'))) &&
    existsSync(path.join(root, 'pids/cgroup.procs'));
  if (v1) return { kind: 'v1', cpu: existsSync(path.join(root, 'cpu/cpu.cfs_quota_us')) };
  const controllers = words(path.join(root, 'cgroup.controllers'));
  if (controllers.length === 0 && !existsSync(path.join(root, 'cgroup.controllers')))
    return {
      kind: 'none',
      why: `no cgroup v1 memory and pids hierarchies and no cgroup v2 tree at ${root}`,
    };
  const enabled = words(path.join(root, 'cgroup.subtree_control'));
  const missing = ['memory', 'pids'].filter((c) => !enabled.includes(c));
  if (missing.length)
    return {
      kind: 'none',
      why: `cgroup v2 at ${root} does not enable ${missing.join(' and ')} for child cgroups (${path.join(root, 'cgroup.subtree_control')} holds "${enabled.join(' ')}"; ${controllers.includes(missing[0]!) ? `enable with: echo +${missing.join(' +')} > ${path.join(root, 'cgroup.subtree_control')}` : 'the kernel does not offer it'})`,
    };
  return { kind: 'v2', cpu: enabled.includes('cpu') };
}

/** Whether this host has the cgroup v1 controllers the v1 wrapper needs. */
export function hasCgroupV1Limits(): boolean {
  return cgroupLayout().kind === 'v1';
}

/**
 * Moves the shell into fresh children of the given cgroups, sets their limits, and execs the
 * rest of argv. $$ names the children, so concurrent connections never share one.
 */
const V1_WRAPPER = [
  'set -e',
  'm="$1/c$$"; p="$2/c$$"; c="${3:+$3/c$$}"',
  // One mkdir for all of them: a process start per connection is the wrapper's main cost.
  'mkdir "$m" "$p" ${c:+"$c"}',
  'echo "$4" > "$m/memory.limit_in_bytes"',
  'echo "$5" > "$p/pids.max"',
  'if [ -n "$c" ]; then echo 100000 > "$c/cpu.cfs_period_us"; echo "$6" > "$c/cpu.cfs_quota_us"; echo $$ > "$c/cgroup.procs"; fi',
  'echo $$ > "$m/cgroup.procs"',
  'echo $$ > "$p/cgroup.procs"',
  'shift 6',
  'exec "$@"',
].join('\n');

/** The same for cgroup v2: one child of the run's dir, memory without swap. */
export const V2_WRAPPER = [
  'set -e',
  'g="$1/c$$"',
  'mkdir "$g"',
  'echo "$2" > "$g/memory.max"',
  // No swap where the kernel accounts it; absent without swap accounting.
  'if [ -e "$g/memory.swap.max" ]; then echo 0 > "$g/memory.swap.max"; fi',
  'echo "$3" > "$g/pids.max"',
  'if [ -n "$4" ]; then echo "$4 100000" > "$g/cpu.max"; fi',
  'echo $$ > "$g/cgroup.procs"',
  'shift 4',
  'exec "$@"',
].join('\n');

/** argv that runs `argv` inside per-run cgroups with the limits applied. */
export function limitedArgv(
  argv: readonly string[],
  cg: LimitCgroups,
  l: ContainerLimits,
): string[] {
  if (cg.kind === 'v2')
    return [
      '/bin/sh',
      '-c',
      V2_WRAPPER,
      'lhc-limits',
      cg.dir,
      String(l.memory),
      String(l.tasks),
      cg.cpu ? String(l.cpu * 1000) : '',
      ...argv,
    ];
  return [
    '/bin/sh',
    '-c',
    V1_WRAPPER,
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

/** Creates the parent cgroups for one verify run, named `name` (unique per run). */
export async function createLimitCgroups(
  name: string,
  logger?: Logger,
  root: string = CGROUP_ROOT,
): Promise<LimitCgroups> {
  const layout = cgroupLayout(root);
  if (layout.kind === 'none')
    throw new Error(`service.limits cannot be applied here: ${layout.why}`);
  if (layout.kind === 'v2') {
    const cg: V2LimitCgroup = { kind: 'v2', dir: path.join(root, name), cpu: layout.cpu };
    const enable = ['+memory', '+pids', ...(layout.cpu ? ['+cpu'] : [])].join(' ');
    await run(['mkdir', cg.dir], { privileged: true, logger });
    // Children get the controllers only when their parent enables them (its subtree_control).
    await run(['sh', '-c', 'echo "$1" > "$2/cgroup.subtree_control"', 'sh', enable, cg.dir], {
      privileged: true,
      logger,
    });
    return cg;
  }
  const cg: V1LimitCgroups = {
    memory: path.join(root, 'memory', name),
    pids: path.join(root, 'pids', name),
  };
  if (layout.cpu) cg.cpu = path.join(root, 'cpu', name);
  await run(['mkdir', cg.memory, cg.pids, ...(cg.cpu ? [cg.cpu] : [])], {
    privileged: true,
    logger,
  });
  return cg;
}

function limitDirs(cg: LimitCgroups): string[] {
  return cg.kind === 'v2' ? [cg.dir] : [cg.memory, cg.pids, ...(cg.cpu ? [cg.cpu] : [])];
}

/**
 * Removes the run's cgroups once their processes are gone (rmdir of a cgroup with a live or
 * unreaped process fails with EBUSY, so it is retried for a few seconds).
 */
export async function removeLimitCgroups(cg: LimitCgroups, logger?: Logger): Promise<void> {
  const dirs = limitDirs(cg).filter((d) => existsSync(d));
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
  const dir = cg.kind === 'v2' ? cg.dir : cg.memory;
  const events = cg.kind === 'v2' ? 'memory.events' : 'memory.oom_control';
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    children++;
    const oom = await readFile(path.join(dir, e.name, events), 'utf8');
    oomKills += Number(/^oom_kill (\d+)$/m.exec(oom)?.[1] ?? 0);
  }
  return { children, oomKills };
}
