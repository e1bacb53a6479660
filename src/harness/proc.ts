/**
 * The host's process table read from /proc, to find the container payload under the process
 * that started it (socket activator → systemd-nspawn → payload) and to make sure nothing
 * outlives a verify run.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { ACCEPT_COMM } from '../accept/accept-elf.js';
import { RUN_AS_COMM } from '../service-user/run-as-elf.js';

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  comm: string;
  /** Clock ticks since boot; with pid it identifies a process across pid reuse. */
  startTime: number;
}

/** Parses /proc/PID/stat; comm may hold spaces and parentheses, so split at the last ')'. */
export function parseStat(text: string): ProcInfo | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open === -1 || close === -1) return undefined;
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); starttime is field 22.
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    ppid: Number(rest[1]),
    pgid: Number(rest[2]),
    startTime: Number(rest[19]),
  };
}

export function readProc(pid: number): ProcInfo | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

export function processTable(): Map<number, ProcInfo> {
  const table = new Map<number, ProcInfo>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const info = readProc(Number(name));
    if (info) table.set(info.pid, info);
  }
  return table;
}

/** All descendants of pid (not pid itself), parents before children. */
export function descendants(
  pid: number,
  table: Map<number, ProcInfo> = processTable(),
): ProcInfo[] {
  const children = new Map<number, ProcInfo[]>();
  for (const p of table.values()) {
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const out: ProcInfo[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of children.get(queue.shift()!) ?? []) {
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}

/**
 * How many pid namespaces deep a process is: the number of ids on the NSpid line of
 * /proc/PID/status (1 in the host's namespace); undefined when the line is missing.
 */
export function parseNsPidDepth(status: string): number | undefined {
  const m = /^NSpid:[ \t]*(.*)$/m.exec(status);
  const ids = m?.[1]!.trim().split(/\s+/).filter(Boolean) ?? [];
  return ids.length > 0 ? ids.length : undefined;
}

/** /proc/PID/status (world-readable), or undefined once the process is gone. */
function procStatus(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
}

/** parseNsPidDepth() of a live process; undefined once it is gone. */
export function pidNamespaceDepth(pid: number): number | undefined {
  const status = procStatus(pid);
  return status === undefined ? undefined : parseNsPidDepth(status);
}

export function exePath(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/** Still the same process (not gone, pid not reused)? */
export function alive(p: Pick<ProcInfo, 'pid' | 'startTime'>): boolean {
  const now = readProc(p.pid);
  return now !== undefined && now.startTime === p.startTime;
}

/**
 * Container payloads under `ancestor` (which may itself be systemd-nspawn): children of a
 * systemd-nspawn process that have already exec'd the payload. Until then nspawn's inner child
 * still runs nspawn's own binary (comm "systemd-nspawn") and its /proc does not yet show the
 * final mounts, capabilities and user namespace. The exe link is compared too when readable
 * (it is not for a non-root caller).
 *
 * A payload also lives in the container's pid namespace, one deeper than nspawn's. nspawn's own
 * helpers stay in nspawn's: with -U it forks "(sd-mkuserns)" for each idmapped mount, SIGKILLs it
 * and reaps it. Between that kill and the reaping (long under load) the helper has no exe link
 * to compare, so without the namespace test it passed for the payload, and a caller that took
 * it (the listen check) waited on a process that was already gone.
 */
export function findPayloads(
  ancestor: number,
  table: Map<number, ProcInfo> = processTable(),
): ProcInfo[] {
  const self = table.get(ancestor);
  const tree = [...(self ? [self] : []), ...descendants(ancestor, table)];
  const out: ProcInfo[] = [];
  for (const n of tree.filter((p) => p.comm === 'systemd-nspawn')) {
    const nspawnStatus = procStatus(n.pid);
    // Gone since `table` was read (nspawn's outer child exits once the container's first process
    // runs): its children in the table are stale, and any live one is now the subreaper's.
    if (nspawnStatus === undefined) continue;
    const nspawnDepth = parseNsPidDepth(nspawnStatus);
    const nspawnExe = exePath(n.pid);
    for (const c of tree) {
      // lhc-run-as (service.user) has not exec'd the payload yet: uid 0, not what is verified.
      if (c.ppid !== n.pid || c.comm === 'systemd-nspawn' || c.comm === RUN_AS_COMM) continue;
      // A warm container's lhc-accept (PID 2 under nspawn's stub init, which shares nspawn's comm
      // and its pid namespace) waits for its connection: the payload is the process it forks for
      // it, once that has exec'd (until then it is another lhc-accept).
      if (c.comm === ACCEPT_COMM) {
        out.push(
          ...tree.filter(
            (g) => g.ppid === c.pid && g.comm !== ACCEPT_COMM && g.comm !== RUN_AS_COMM,
          ),
        );
        continue;
      }
      // A kernel without NSpid (before 4.1) leaves only the comm and exe tests.
      if (nspawnDepth !== undefined && !((pidNamespaceDepth(c.pid) ?? 0) > nspawnDepth)) continue;
      const exe = exePath(c.pid);
      if (exe === undefined || nspawnExe === undefined || exe !== nspawnExe) out.push(c);
    }
  }
  return out;
}
