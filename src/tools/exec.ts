/**
 * The one module that starts processes. Everything else builds argv as data and calls run() or
 * start(), so logging, timeouts, privilege and cleanup are decided in one place.
 */
import { execa, type ResultPromise } from 'execa';
import { ToolError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { assertKnownProgram, packageFor } from '../host/requirements.js';

export interface RunOptions {
  /** Prefix `sudo -n` when this process is not root. */
  privileged?: boolean;
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Milliseconds; the whole process group is killed when it runs out. Default 10 minutes. */
  timeoutMs?: number;
  input?: string | Buffer;
  /** Where stdin comes from when no input is given. Default 'ignore'. */
  stdin?: 'ignore' | 'pipe' | 'inherit';
  signal?: AbortSignal;
  logger?: Logger;
  /** Do not throw on a non-zero exit; the caller inspects exitCode. */
  reject?: boolean;
  /** Return stdout as bytes (for binary protocols such as Gopher type 9). */
  binary?: boolean;
  /**
   * A long step the user should see: the command is logged at info level instead of debug, and a
   * heartbeat with the elapsed time is logged while it runs, so minutes of silence never look hung.
   */
  loud?: boolean;
  /** Milliseconds between heartbeats of a loud command. Default 30 s. */
  heartbeatMs?: number;
  /** Each line of stdout and stderr as it arrives (a step whose own progress the user should see). */
  onLine?: (line: string) => void;
  /** Lines of stderr kept in a ToolError. */
  stderrLines?: number;
}

export interface RunResult {
  command: string;
  exitCode: number;
  stdout: string;
  stdoutBytes: Buffer;
  stderr: string;
  timedOut: boolean;
}

const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const DEFAULT_HEARTBEAT_MS = 30_000;

/** Logs "still running" with the elapsed time every interval; returns the function that stops it. */
function heartbeat(argv: readonly string[], opts: RunOptions): () => void {
  const logger = opts.logger;
  if (!opts.loud || !logger) return () => {};
  const started = Date.now();
  const what = formatCommand(argv.slice(0, 2));
  const timer = setInterval(() => {
    const s = Math.round((Date.now() - started) / 1000);
    logger.info(`… ${what}: still running (${s} s)`);
  }, opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS);
  timer.unref();
  return () => clearInterval(timer);
}
const KILL_GRACE_MS = 3_000;

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * argv with `sudo -n` in front when privileged and not root. Pure, for tests. sudo resets the
 * environment, so the caller's `env` entries travel as `env K=V` behind it.
 */
export function withPrivilege(
  argv: readonly string[],
  privileged: boolean,
  root: boolean = isRoot(),
  env: Record<string, string | undefined> = {},
): string[] {
  if (!privileged || root) return [...argv];
  const pairs = Object.entries(env)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  return ['sudo', '-n', '--', ...(pairs.length > 0 ? ['env', ...pairs] : []), ...argv];
}

/** Quote argv for a log line a user can paste into a shell. */
export function formatCommand(argv: readonly string[]): string {
  return argv
    .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`))
    .join(' ');
}

export function tail(text: string, lines: number): string {
  const all = text.trimEnd().split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
}

/** Live process groups, so an interrupted run can still kill what it started. */
const liveGroups = new Set<number>();

export function killGroup(pid: number, signal: NodeJS.Signals = 'SIGTERM'): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Kills every process group still running; used by the shells on SIGTERM/SIGINT. */
export function killAllGroups(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const pid of liveGroups) killGroup(pid, signal);
}

function missingTool(tool: string): UserError {
  const pkg = packageFor(tool);
  return new UserError(
    `required tool '${tool}' was not found` +
      (pkg ? `; install it with: apt-get install ${pkg} (or run: lhc setup)` : ''),
  );
}

/** The error for a command that could not be started: the tool itself, or sudo in front of it. */
function notStarted(full: readonly string[], argv: readonly string[]): UserError {
  if (full[0] === 'sudo' && argv[0] !== 'sudo') {
    return new UserError(
      `'${argv[0]}' needs root and sudo is not installed: run as root, or install sudo (apt-get install ${packageFor('sudo') ?? 'sudo'}) and allow this user passwordless sudo`,
    );
  }
  return missingTool(full[0]!);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** What went wrong when a command run through `sudo -n` failed because of sudo, if it did. */
function sudoFailure(
  argv: readonly string[],
  exitCode: number,
  stderr: string,
): UserError | undefined {
  const tool = argv[0]!;
  const quoted = `[‘']${escapeRegExp(tool)}[’']`;
  // sudo reports a missing command itself; behind `env K=V` it is env that cannot find it.
  if (
    new RegExp(`^sudo: ${escapeRegExp(tool)}: command not found$`, 'm').test(stderr) ||
    (exitCode === 127 &&
      new RegExp(`^env: ${quoted}: No such file or directory$`, 'm').test(stderr))
  ) {
    return missingTool(tool);
  }
  if (
    /^sudo: (a password is required|a terminal is required|.* is not in the sudoers file|.* is not allowed to execute)/m.test(
      stderr,
    )
  ) {
    return new UserError(
      `'${tool}' needs root and passwordless sudo is not available (sudo -n failed): run as root or configure passwordless sudo`,
    );
  }
  return undefined;
}

function spawn(argv: string[], opts: RunOptions): ResultPromise {
  const [file, ...args] = argv;
  return execa(file!, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: true,
    input: opts.input,
    stdin: opts.input === undefined ? (opts.stdin ?? 'ignore') : undefined,
    // Own process group, so a timeout takes down grandchildren (nspawn's payload, QEMU) too.
    detached: true,
    reject: false,
    encoding: 'buffer',
    stripFinalNewline: false,
    maxBuffer: 512 * 1024 * 1024,
    cleanup: true,
  });
}

/** Calls onLine for every complete line either stream writes, and the last partial one at the end. */
function streamLines(child: ResultPromise, onLine: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    let pending = '';
    stream.on('data', (chunk: Buffer) => {
      const lines = (pending + chunk.toString('utf8')).split(/\r?\n|\r/);
      pending = lines.pop() ?? '';
      for (const l of lines) if (l.trim()) onLine(l);
    });
    stream.on('end', () => {
      if (pending.trim()) onLine(pending);
    });
  }
}

export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  // An abort that already happened never fires its event again: refuse to start at all.
  opts.signal?.throwIfAborted();
  assertKnownProgram(argv[0]!);
  const full = withPrivilege(argv, opts.privileged ?? false, isRoot(), opts.env);
  const command = formatCommand(full);
  if (opts.loud) opts.logger?.info(`$ ${command}`);
  else opts.logger?.debug(`$ ${command}`);
  const child = spawn(full, opts);
  const pid = child.pid;
  if (pid !== undefined) liveGroups.add(pid);
  let timedOut = false;
  let aborted = false;
  const stop = () => {
    if (pid === undefined) return;
    killGroup(pid, 'SIGTERM');
    setTimeout(() => killGroup(pid, 'SIGKILL'), KILL_GRACE_MS).unref();
  };
  const timer = setTimeout(() => {
    timedOut = true;
    stop();
  }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const onAbort = () => {
    aborted = true;
    stop();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const stopHeartbeat = heartbeat(argv, opts);
  if (opts.onLine) streamLines(child, opts.onLine);
  try {
    const r = await child;
    const stdoutBytes = Buffer.from(r.stdout as Uint8Array);
    const stderr = Buffer.from(r.stderr as Uint8Array).toString('utf8');
    if ((r as { code?: string }).code === 'ENOENT') throw notStarted(full, argv);
    const exitCode = r.exitCode ?? (r.signal ? 128 : -1);
    const result: RunResult = {
      command,
      exitCode,
      stdout: stdoutBytes.toString('utf8'),
      stdoutBytes,
      stderr,
      timedOut,
    };
    if (timedOut) {
      const seconds = (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000;
      throw new ToolError(
        command,
        undefined,
        tail(stderr, opts.stderrLines ?? 20),
        `timed out after ${seconds} s`,
      );
    }
    if (aborted)
      throw new ToolError(command, undefined, tail(stderr, opts.stderrLines ?? 20), 'aborted');
    if (exitCode !== 0 && opts.reject !== false) {
      const viaSudo = full[0] === 'sudo' && argv[0] !== 'sudo';
      const sudoError = viaSudo ? sudoFailure(argv, exitCode, stderr) : undefined;
      if (sudoError) throw sudoError;
      throw new ToolError(
        command,
        exitCode,
        tail(stderr, opts.stderrLines ?? 20),
        'command failed',
      );
    }
    return result;
  } finally {
    stopHeartbeat();
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    if (pid !== undefined) liveGroups.delete(pid);
  }
}

/** A long-running process (a container, a socket activator) that the caller stops itself. */
export interface Started {
  pid: number;
  command: string;
  /** Resolves when the process exits, never rejects. */
  exited: Promise<{ exitCode: number | undefined; stdout: string; stderr: string }>;
  /** SIGTERM to the whole group, SIGKILL after a grace period; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export function start(argv: readonly string[], opts: RunOptions = {}): Started {
  assertKnownProgram(argv[0]!);
  const full = withPrivilege(argv, opts.privileged ?? false, isRoot(), opts.env);
  const command = formatCommand(full);
  if (opts.loud) opts.logger?.info(`$ ${command} &`);
  else opts.logger?.debug(`$ ${command} &`);
  const child = spawn(full, { ...opts });
  const pid = child.pid;
  if (pid === undefined) throw notStarted(full, argv);
  liveGroups.add(pid);
  if (opts.onLine) streamLines(child, opts.onLine);
  const exited = child.then((r) => {
    liveGroups.delete(pid);
    return {
      exitCode: r.exitCode,
      stdout: Buffer.from(r.stdout as Uint8Array).toString('utf8'),
      stderr: Buffer.from(r.stderr as Uint8Array).toString('utf8'),
    };
  });
  return {
    pid,
    command,
    exited,
    async stop(graceMs = KILL_GRACE_MS) {
      killGroup(pid, 'SIGTERM');
      const t = setTimeout(() => killGroup(pid, 'SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
      // The leader may be gone while a grandchild lingers in the group.
      killGroup(pid, 'SIGKILL');
    },
  };
}

/** True when `tool` is on PATH. */
export async function hasTool(tool: string): Promise<boolean> {
  const r = await run(['sh', '-c', `command -v "$1"`, 'sh', tool], { reject: false });
  return r.exitCode === 0;
}
