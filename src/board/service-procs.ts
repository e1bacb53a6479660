/**
 * The payload processes of the systemd runtime on the board: no nspawn parent to look for, so a
 * process is the service's when its cgroup is the service unit's (or one of its instances').
 * A process that systemd has forked but not yet exec'd shows a comm in parentheses, e.g.
 * "(lua)": its sandbox is not complete, so it is not a payload yet. lhc-accept, the inetd loop,
 * and a connection's child it has forked but not yet exec'd, are not payloads either.
 */
import { readFileSync } from 'node:fs';
import { ACCEPT_COMM } from '../accept/accept-elf.js';
import { descendants, processTable, type ProcInfo } from '../harness/proc.js';

/**
 * Does a /proc/PID/cgroup text place the process in `name`.service or an instance
 * `name@...service`? (A config name is lower-case letters, digits and "-": nothing to escape.)
 */
export function inServiceCgroup(cgroupText: string, name: string): boolean {
  const unit = new RegExp(`/${name}(@[^/]*)?\\.service(/|$)`);
  return cgroupText
    .split('\n')
    .map((l) => l.split(':').slice(2).join(':'))
    .some((p) => unit.test(p));
}

function cgroupOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return '';
  }
}

export function findServicePayloads(
  ancestor: number,
  name: string,
  table: Map<number, ProcInfo> = processTable(),
): ProcInfo[] {
  return descendants(ancestor, table)
    .filter(
      (p) =>
        !p.comm.startsWith('(') && p.comm !== ACCEPT_COMM && inServiceCgroup(cgroupOf(p.pid), name),
    )
    .sort((a, b) => a.startTime - b.startTime);
}
