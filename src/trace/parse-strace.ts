/**
 * Turns syscall traces into file events: which path each process touched, how, and with what
 * result. Two inputs share one event model:
 *
 * - QEMU_STRACE (emulated runs): `PID name(args) = ret`, failures `= -1 errno=N (text)`. Strings
 *   are printed raw (no escaping) and each call is written in two pieces (the call before it
 *   runs, the result after), so when several processes write to one trace stream a blocking call
 *   of one process is interleaved with lines of another: `1 wait4(...)3 openat(...) = 3` and a
 *   later orphan ` = 3`. The parser splits such lines at `)PID name(` and drops orphan results.
 *   QEMU never logs the entrypoint's own execve nor the ELF interpreter's loading.
 * - host `strace -f` (native runs): `PID  name(args) = ret`, errors `= -1 ENOENT (text)`, calls
 *   split by other processes as `<unfinished ...>` / `<... name resumed>`; strings C-escaped.
 *
 * Paths are made absolute as the guest saw them (relative to the process's cwd or to the
 * directory an fd refers to); symlinks and `..` are left for resolve.ts, which knows the root.
 */

export type TraceOp =
  | 'open'
  | 'exec'
  | 'stat'
  | 'access'
  | 'readlink'
  | 'chdir'
  | 'getdents'
  | 'mkdir'
  | 'unlink'
  | 'rmdir'
  | 'rename-from'
  | 'rename-to'
  | 'symlink'
  | 'link'
  | 'truncate'
  | 'chmod'
  | 'chown'
  | 'utime'
  | 'mknod';

export interface TraceEvent {
  pid: number;
  op: TraceOp;
  /** Absolute path inside the container, not yet resolved through symlinks. */
  path: string;
  /** 'unknown' when the result was lost in interleaved output. */
  result: 'ok' | 'error' | 'unknown';
  /** Set when result is 'error'. */
  errno?: number;
  /** The call creates, changes or removes something at path. */
  write: boolean;
  /** The final component is not followed if it is a symlink (lstat, readlink, O_NOFOLLOW, unlink...). */
  noFollow?: boolean;
  /** The raw syscall name, for the report and debugging. */
  syscall: string;
}

export interface ParseOptions {
  /** Working directory of the first process (the container's --chdir), default '/'. */
  cwd?: string;
  /** The entrypoint (command[0]): the first process's executable, for execve("/proc/self/exe"). */
  entrypoint?: string;
  /**
   * strace of a whole nspawn run: ignore everything until a process successfully execs this path,
   * then keep only that process and its descendants (nspawn's own setup is not the service's).
   */
  payloadExec?: string;
}

export interface ParseResult {
  events: TraceEvent[];
  /** Lines (or pieces) that looked like calls but could not be used: unknown fd, torn output. */
  skipped: number;
  /** Every pid seen in the payload, in order of appearance. */
  pids: number[];
}

/** errno names strace prints, for the ones a file trace meets. */
const ERRNO: Record<string, number> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EOPNOTSUPP: 95,
  ENOTSUP: 95,
};

export const ENOENT = 2;

type Ret = { kind: 'ok'; value: number } | { kind: 'error'; errno: number } | { kind: 'unknown' };

interface Call {
  pid: number;
  name: string;
  args: string[];
  ret: Ret;
}

/** Splits an argument list at top-level commas; `s` starts just after '('. Returns the args and the index after ')'. */
function splitArgs(
  s: string,
  from: number,
  escapes: boolean,
): { args: string[]; end: number } | undefined {
  const args: string[] = [];
  let depth = 0;
  let cur = '';
  let i = from;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '"') {
      // A string: strace escapes quotes; QEMU prints raw bytes, so a string ends at a quote
      // followed by a separator.
      let j = i + 1;
      for (; j < s.length; j++) {
        if (escapes && s[j] === '\\') {
          j++;
          continue;
        }
        if (s[j] === '"' && (escapes || j + 1 >= s.length || /[,)}\]. ]/.test(s[j + 1]!))) break;
      }
      cur += s.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '(' || c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === ')') {
      if (depth === 0) {
        if (cur.trim() !== '' || args.length > 0) args.push(cur.trim());
        return { args, end: i + 1 };
      }
      depth--;
    } else if (c === ',' && depth === 0) {
      args.push(cur.trim());
      cur = '';
      i++;
      continue;
    }
    cur += c;
    i++;
  }
  return undefined;
}

/** The string value of a quoted argument, or undefined for NULL, addresses and the like. */
function stringArg(arg: string | undefined, escapes: boolean): string | undefined {
  if (arg === undefined || !arg.startsWith('"')) return undefined;
  const close = escapes ? findClosingQuote(arg) : arg.lastIndexOf('"');
  if (close <= 0) return undefined;
  const body = arg.slice(1, close);
  return escapes ? unescapeC(body) : body;
}

function findClosingQuote(arg: string): number {
  for (let j = 1; j < arg.length; j++) {
    if (arg[j] === '\\') j++;
    else if (arg[j] === '"') return j;
  }
  return -1;
}

function unescapeC(s: string): string {
  if (!s.includes('\\')) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\') {
      bytes.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const n = s[++i];
    if (n === 'x') {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (n !== undefined && /[0-7]/.test(n)) {
      const m = /^[0-7]{1,3}/.exec(s.slice(i))![0];
      bytes.push(parseInt(m, 8));
      i += m.length - 1;
    } else {
      const simple: Record<string, number> = {
        n: 10,
        t: 9,
        r: 13,
        v: 11,
        f: 12,
        '\\': 92,
        '"': 34,
        "'": 39,
      };
      bytes.push(n !== undefined && n in simple ? simple[n]! : (n ?? '\\').charCodeAt(0));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function parseRet(text: string, strace: boolean): Ret {
  // QEMU sometimes prints a torn ` =  = 15`; the last `= x` is the one that belongs to this call.
  const m = /=\s*(-?\d+|0x[0-9a-fA-F]+|\?)(?:\s+errno=(\d+)|\s+([A-Z][A-Z0-9_]+))?[^=]*$/.exec(
    text,
  );
  if (!m) return { kind: 'unknown' };
  if (m[1] === '?') return { kind: 'unknown' };
  const value = m[1]!.startsWith('0x') ? parseInt(m[1]!, 16) : Number(m[1]);
  if (value < 0) {
    if (m[2] !== undefined) return { kind: 'error', errno: Number(m[2]) };
    if (strace && m[3] !== undefined) return { kind: 'error', errno: ERRNO[m[3]] ?? -1 };
    return { kind: 'error', errno: -value };
  }
  return { kind: 'ok', value };
}

const CALL_START = /^(\d+) +([a-z_][a-z0-9_]*)\(/;

/** QEMU trace text → calls; torn lines are split, orphan results dropped. */
export function qemuCalls(text: string): { calls: Call[]; skipped: number } {
  const calls: Call[] = [];
  let skipped = 0;
  for (const line of text.split('\n')) {
    let rest = line;
    while (rest.length > 0) {
      const m = CALL_START.exec(rest);
      if (!m) break;
      const parsed = splitArgs(rest, m[0].length, false);
      if (!parsed) {
        skipped++;
        break;
      }
      const after = rest.slice(parsed.end);
      // The next call of another process may follow directly (`...)3 brk(NULL) = ...`).
      const next = /\d+ +[a-z_][a-z0-9_]*\(/.exec(after);
      const retText = next ? after.slice(0, next.index) : after;
      calls.push({
        pid: Number(m[1]),
        name: m[2]!,
        args: parsed.args,
        ret: /=/.test(retText) ? parseRet(retText, false) : { kind: 'unknown' },
      });
      if (!next) break;
      rest = after.slice(next.index);
    }
  }
  return { calls, skipped };
}

const STRACE_LINE = /^(\d+) +(.*)$/;

/** strace -f text → calls, with <unfinished ...> / <... resumed> pieces joined. */
export function straceCalls(text: string): { calls: Call[]; skipped: number } {
  const calls: Call[] = [];
  const pending = new Map<number, string>();
  let skipped = 0;
  for (const raw of text.split('\n')) {
    const lm = STRACE_LINE.exec(raw);
    if (!lm) continue;
    const pid = Number(lm[1]);
    let body = lm[2]!;
    if (body.startsWith('+++') || body.startsWith('---')) continue;
    const unfinished = body.endsWith('<unfinished ...>');
    const resumed = /^<\.\.\. ([a-z_0-9]+) resumed>(.*)$/.exec(body);
    if (resumed) {
      const head = pending.get(pid);
      pending.delete(pid);
      if (head === undefined) {
        skipped++;
        continue;
      }
      body = head + resumed[2]!;
    }
    if (unfinished) {
      pending.set(pid, body.slice(0, -'<unfinished ...>'.length).trimEnd());
      // The child of a fork shows up before the parent's call resumes: record the call now so
      // the child can inherit from it.
      const cm = /^([a-z_][a-z0-9_]*)\(/.exec(body);
      if (cm && /^(clone|clone3|fork|vfork)$/.test(cm[1]!)) {
        calls.push({ pid, name: cm[1]!, args: [], ret: { kind: 'unknown' } });
      }
      continue;
    }
    const cm = /^([a-z_][a-z0-9_]*)\(/.exec(body);
    if (!cm) continue;
    const parsed = splitArgs(body, cm[0].length, true);
    if (!parsed) {
      skipped++;
      continue;
    }
    if (resumed && /^(clone|clone3|fork|vfork)$/.test(cm[1]!)) continue; // recorded when it started
    calls.push({
      pid,
      name: cm[1]!,
      args: parsed.args,
      ret: parseRet(body.slice(parsed.end), true),
    });
  }
  return { calls, skipped };
}

interface Proc {
  cwd: string;
  fds: Map<number, string>;
  exe: string | undefined;
}

/** Joins and cleans a path lexically, keeping `..` (only the root knows where it leads). */
export function joinGuest(base: string, p: string): string {
  const parts = (p.startsWith('/') ? p : `${base}/${p}`)
    .split('/')
    .filter((c) => c !== '' && c !== '.');
  return `/${parts.join('/')}`;
}

interface SyscallSpec {
  op: TraceOp;
  /** Index of the dirfd argument, if the call is an *at variant. */
  dirfd?: number;
  path: number;
  write?: boolean;
  noFollow?: boolean;
  /** Index of a flags argument whose text decides write/noFollow. */
  flags?: number;
}

/** The calls that name a path; anything else only matters for fds, cwd and processes. */
const PATH_CALLS: Record<string, SyscallSpec[]> = {
  open: [{ op: 'open', path: 0, flags: 1 }],
  openat: [{ op: 'open', dirfd: 0, path: 1, flags: 2 }],
  openat2: [{ op: 'open', dirfd: 0, path: 1, flags: 2 }],
  creat: [{ op: 'open', path: 0, write: true }],
  execve: [{ op: 'exec', path: 0 }],
  execveat: [{ op: 'exec', dirfd: 0, path: 1 }],
  stat: [{ op: 'stat', path: 0 }],
  stat64: [{ op: 'stat', path: 0 }],
  lstat: [{ op: 'stat', path: 0, noFollow: true }],
  lstat64: [{ op: 'stat', path: 0, noFollow: true }],
  newfstatat: [{ op: 'stat', dirfd: 0, path: 1, flags: 3 }],
  fstatat64: [{ op: 'stat', dirfd: 0, path: 1, flags: 3 }],
  statx: [{ op: 'stat', dirfd: 0, path: 1, flags: 2 }],
  statfs: [{ op: 'stat', path: 0 }],
  access: [{ op: 'access', path: 0 }],
  faccessat: [{ op: 'access', dirfd: 0, path: 1, flags: 3 }],
  faccessat2: [{ op: 'access', dirfd: 0, path: 1, flags: 3 }],
  readlink: [{ op: 'readlink', path: 0, noFollow: true }],
  readlinkat: [{ op: 'readlink', dirfd: 0, path: 1, noFollow: true }],
  chdir: [{ op: 'chdir', path: 0 }],
  mkdir: [{ op: 'mkdir', path: 0, write: true, noFollow: true }],
  mkdirat: [{ op: 'mkdir', dirfd: 0, path: 1, write: true, noFollow: true }],
  unlink: [{ op: 'unlink', path: 0, write: true, noFollow: true }],
  unlinkat: [{ op: 'unlink', dirfd: 0, path: 1, write: true, noFollow: true, flags: 2 }],
  rmdir: [{ op: 'rmdir', path: 0, write: true, noFollow: true }],
  rename: [
    { op: 'rename-from', path: 0, write: true, noFollow: true },
    { op: 'rename-to', path: 1, write: true, noFollow: true },
  ],
  renameat: [
    { op: 'rename-from', dirfd: 0, path: 1, write: true, noFollow: true },
    { op: 'rename-to', dirfd: 2, path: 3, write: true, noFollow: true },
  ],
  renameat2: [
    { op: 'rename-from', dirfd: 0, path: 1, write: true, noFollow: true },
    { op: 'rename-to', dirfd: 2, path: 3, write: true, noFollow: true },
  ],
  symlink: [{ op: 'symlink', path: 1, write: true, noFollow: true }],
  symlinkat: [{ op: 'symlink', dirfd: 1, path: 2, write: true, noFollow: true }],
  link: [{ op: 'link', path: 1, write: true, noFollow: true }],
  linkat: [{ op: 'link', dirfd: 2, path: 3, write: true, noFollow: true }],
  truncate: [{ op: 'truncate', path: 0, write: true }],
  chmod: [{ op: 'chmod', path: 0, write: true }],
  fchmodat: [{ op: 'chmod', dirfd: 0, path: 1, write: true }],
  chown: [{ op: 'chown', path: 0, write: true }],
  lchown: [{ op: 'chown', path: 0, write: true, noFollow: true }],
  fchownat: [{ op: 'chown', dirfd: 0, path: 1, write: true, flags: 4 }],
  utimensat: [{ op: 'utime', dirfd: 0, path: 1, write: true, flags: 3 }],
  utimes: [{ op: 'utime', path: 0, write: true }],
  mknod: [{ op: 'mknod', path: 0, write: true }],
  mknodat: [{ op: 'mknod', dirfd: 0, path: 1, write: true }],
};

const FORKS = new Set(['clone', 'clone3', 'fork', 'vfork']);

/** Open flags that make an open a write. */
const WRITE_FLAGS = /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND|O_TMPFILE/;

/** AT_SYMLINK_NOFOLLOW is 0x100; QEMU prints some flags as hex. */
function hasNoFollow(flags: string): boolean {
  if (/AT_SYMLINK_NOFOLLOW|O_NOFOLLOW/.test(flags)) return true;
  const hex = /^0x([0-9a-fA-F]+)$/.exec(flags.trim());
  return hex !== null && (parseInt(hex[1]!, 16) & 0x100) !== 0;
}

function fdNumber(arg: string | undefined): number | 'cwd' | undefined {
  if (arg === undefined) return undefined;
  if (arg === 'AT_FDCWD' || arg === '-100') return 'cwd';
  const m = /^(-?\d+)/.exec(arg);
  return m ? Number(m[1]) : undefined;
}

/** Replays calls against a model of processes (cwd, fd table, executable) and emits file events. */
function replay(
  calls: readonly Call[],
  opts: ParseOptions,
  escapes: boolean,
  initialSkipped: number,
): ParseResult {
  const procs = new Map<number, Proc>();
  const events: TraceEvent[] = [];
  const pids: number[] = [];
  const payload = new Set<number>();
  let started = opts.payloadExec === undefined;
  let skipped = initialSkipped;
  let lastForker: number | undefined;
  const rootCwd = opts.cwd ?? '/';

  const proc = (pid: number): Proc => {
    let p = procs.get(pid);
    if (!p) {
      // A new process: a fork child inherits cwd, fds and executable from whoever forked last.
      const parent = lastForker !== undefined ? procs.get(lastForker) : undefined;
      p = parent
        ? { cwd: parent.cwd, fds: new Map(parent.fds), exe: parent.exe }
        : { cwd: rootCwd, fds: new Map(), exe: opts.entrypoint };
      procs.set(pid, p);
      if (
        started &&
        (opts.payloadExec === undefined || (lastForker !== undefined && payload.has(lastForker)))
      ) {
        payload.add(pid);
        pids.push(pid);
      }
    }
    return p;
  };

  for (const c of calls) {
    const p = proc(c.pid);
    const ok = c.ret.kind === 'ok';
    const retValue = c.ret.kind === 'ok' ? c.ret.value : undefined;

    if (FORKS.has(c.name)) {
      lastForker = c.pid;
      continue;
    }
    switch (c.name) {
      case 'close': {
        const fd = fdNumber(c.args[0]);
        if (typeof fd === 'number') p.fds.delete(fd);
        continue;
      }
      case 'dup':
      case 'dup2':
      case 'dup3':
      case 'fcntl':
      case 'fcntl64': {
        const from = fdNumber(c.args[0]);
        if (c.name.startsWith('fcntl') && !/F_DUPFD/.test(c.args[1] ?? '')) continue;
        let to = retValue;
        if (c.name === 'dup2' || c.name === 'dup3') to = fdNumber(c.args[1]) as number | undefined;
        if (!ok || typeof from !== 'number' || typeof to !== 'number') continue;
        const target = p.fds.get(from);
        if (target !== undefined) p.fds.set(to, target);
        else p.fds.delete(to);
        continue;
      }
      case 'fchdir': {
        const fd = fdNumber(c.args[0]);
        const dir = typeof fd === 'number' ? p.fds.get(fd) : undefined;
        if (ok && dir !== undefined) p.cwd = dir;
        continue;
      }
      case 'getdents':
      case 'getdents64': {
        const fd = fdNumber(c.args[0]);
        const dir = typeof fd === 'number' ? p.fds.get(fd) : undefined;
        if (dir !== undefined && payload.has(c.pid)) {
          events.push({
            pid: c.pid,
            op: 'getdents',
            path: dir,
            result: ok ? 'ok' : c.ret.kind,
            syscall: c.name,
            write: false,
            ...errnoOf(c.ret),
          });
        }
        continue;
      }
    }

    const specs = PATH_CALLS[c.name];
    if (!specs) continue;
    for (const spec of specs) {
      const raw = stringArg(c.args[spec.path], escapes);
      if (raw === undefined) continue;
      let base = p.cwd;
      if (spec.dirfd !== undefined && !raw.startsWith('/')) {
        const fd = fdNumber(c.args[spec.dirfd]);
        if (fd === undefined) {
          skipped++;
          continue;
        }
        if (fd !== 'cwd') {
          const dir = p.fds.get(fd);
          if (dir === undefined) {
            skipped++;
            continue;
          }
          base = dir;
        }
      }
      // An empty path with AT_EMPTY_PATH means the fd itself: already recorded when it was opened.
      if (raw === '') continue;
      let guestPath = joinGuest(base, raw);
      const flags = spec.flags !== undefined ? (c.args[spec.flags] ?? '') : '';
      let write = spec.write ?? false;
      let noFollow = spec.noFollow ?? false;
      let op = spec.op;
      if (spec.op === 'open' && WRITE_FLAGS.test(flags)) write = true;
      if (flags && hasNoFollow(flags)) noFollow = true;
      if (spec.op === 'unlink' && /AT_REMOVEDIR|^0x200$/.test(flags)) op = 'rmdir';

      if (op === 'exec') {
        // Busybox and friends re-exec themselves through /proc/self/exe.
        if (guestPath === '/proc/self/exe' && p.exe !== undefined) guestPath = p.exe;
        // A successful execve never returns, so whatever result follows it belongs to someone else.
        const failed = c.ret.kind === 'error';
        if (!failed) {
          p.exe = guestPath;
          if (!started && guestPath === opts.payloadExec) {
            started = true;
            payload.add(c.pid);
            pids.push(c.pid);
            p.cwd = rootCwd;
            for (const fd of [...p.fds.keys()]) if (fd > 2) p.fds.delete(fd);
          }
        }
        if (payload.has(c.pid)) {
          events.push({
            pid: c.pid,
            op,
            path: guestPath,
            result: failed ? 'error' : 'ok',
            syscall: c.name,
            write: false,
            ...errnoOf(c.ret),
          });
        }
        continue;
      }

      if (ok && op === 'open' && retValue !== undefined) p.fds.set(retValue, guestPath);
      if (ok && op === 'chdir') p.cwd = guestPath;
      if (!payload.has(c.pid)) continue;
      events.push({
        pid: c.pid,
        op,
        path: guestPath,
        result: c.ret.kind,
        ...errnoOf(c.ret),
        write,
        ...(noFollow ? { noFollow } : {}),
        syscall: c.name,
      });
    }
  }
  return { events, skipped, pids };
}

function errnoOf(r: Ret): { errno?: number } {
  return r.kind === 'error' ? { errno: r.errno } : {};
}

/** Parses QEMU_STRACE output (one stream, or several per-pid files concatenated). */
export function parseQemuStrace(text: string, opts: ParseOptions = {}): ParseResult {
  const { calls, skipped } = qemuCalls(text);
  return replay(calls, opts, false, skipped);
}

/** Parses `strace -f` output (written with -o, so every line carries its pid). */
export function parseHostStrace(text: string, opts: ParseOptions = {}): ParseResult {
  const { calls, skipped } = straceCalls(text);
  return replay(calls, opts, true, skipped);
}

/**
 * How the first process of a QEMU_STRACE stream (one inetd connection's: the process lhc-accept
 * started, which execs the service) ended: its pid, and the status of its exit_group when it
 * logged one (none: it was killed by a signal, or is still running). QEMU writes
 * `PID exit_group(N)\n` in one piece just before the process ends, but pieces of other
 * processes' calls (execve's arguments are written one by one) may come right before it on the
 * same line, so it is found by its text, a match not glued to other digits first.
 */
export function qemuExitStatus(text: string): { first?: number; status?: number } {
  const head = /^(\d+) +[a-z_][a-z0-9_]*\(/m.exec(text);
  if (!head) return {};
  const first = Number(head[1]);
  const exit = (glued: boolean) =>
    new RegExp(`${glued ? '' : '(?<![0-9])'}${first} exit_group\\((-?\\d+)\\)\\n`).exec(text);
  const m = exit(false) ?? exit(true);
  return m ? { first, status: Number(m[1]) } : { first };
}
