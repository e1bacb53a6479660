/**
 * Is a port listening inside a network namespace? Read from /proc/PID/net/tcp{,6} (any process
 * in that namespace will do); when this process may not read them (a non-root builder using
 * sudo), a privileged connect from inside the namespace answers instead.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import type { Logger } from '../core/logger.js';
import { run } from '../tools/exec.js';

/** True when /proc/net/tcp{,6} text shows a LISTEN socket on `port` (any local address). */
export function listensOn(netTcp: string, port: number): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return netTcp.split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f[1]?.endsWith(`:${hexPort}`) === true && f[3] === '0A';
  });
}

/** Inodes of the LISTEN sockets on `port` in /proc/net/tcp{,6} text (field 10). */
export function listenerInodes(netTcp: string, port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return netTcp
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hexPort}`) === true && f[3] === '0A' && f[9] !== undefined)
    .map((f) => f[9]!);
}

/**
 * Socket inodes among the open files of `pid` (none once it has exited), or undefined when we
 * may not read its fd table.
 */
export async function socketInodes(pid: number): Promise<Set<string> | undefined> {
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? undefined : new Set();
  }
  const out = new Set<string>();
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) out.add(m[1]!);
  }
  return out;
}

/**
 * Whether one of `pids` (never this process) holds the socket listening on `port` in this process's network
 * namespace: true, false, or undefined when no fd table can be read (a non-root caller and a
 * privileged listener). Another build's listener on the same port is not ours: a port picked
 * free can be taken by someone else before our listener binds it.
 */
export async function holdsListener(
  pids: readonly number[],
  port: number,
): Promise<boolean | undefined> {
  const tables = await readNetTcp('/proc/self');
  if (tables === undefined) return undefined;
  // A child between fork and exec still shows this process's sockets: those are never its own.
  const ours = (await socketInodes(process.pid)) ?? new Set<string>();
  const inodes = listenerInodes(tables, port).filter((i) => !ours.has(i));
  let readable = false;
  for (const pid of pids) {
    const own = await socketInodes(pid);
    if (!own) continue;
    readable = true;
    if (inodes.some((i) => own.has(i))) return true;
  }
  return readable ? false : undefined;
}

/** tcp and tcp6 tables of `procDir` (e.g. /proc/self), or undefined when neither is readable. */
export async function readNetTcp(procDir: string): Promise<string | undefined> {
  const parts = await Promise.all(
    ['tcp', 'tcp6'].map((f) => readFile(`${procDir}/net/${f}`, 'utf8').catch(() => undefined)),
  );
  const readable = parts.filter((p): p is string => p !== undefined);
  return readable.length > 0 ? readable.join('\n') : undefined;
}

/** Connect test from inside the namespace, for when /proc does not tell us (needs privilege). */
const CONNECT_CHECK =
  "const s=require('net').connect(+process.argv[1],'127.0.0.1',()=>{s.destroy();process.exit(0)});" +
  "s.on('error',()=>process.exit(1));";

/** True when something listens on `port` in the network namespace of `pid`. */
export async function listening(pid: number, port: number, logger?: Logger): Promise<boolean> {
  const tables = await readNetTcp(`/proc/${pid}`);
  if (tables !== undefined) return listensOn(tables, port);
  const r = await run(
    ['nsenter', '-t', String(pid), '-n', '--', process.execPath, '-e', CONNECT_CHECK, String(port)],
    { privileged: true, reject: false, timeoutMs: 10_000, ...(logger ? { logger } : {}) },
  );
  return r.exitCode === 0;
}
