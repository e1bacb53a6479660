/**
 * The traced run: the service runs in systemd-nspawn on a writable copy of the root, without a
 * network, while every file it touches is recorded; the probes drive it the way clients will.
 *
 * - Emulated (host arch differs from the target): QEMU_STRACE into a FIFO bound at /lhc-trace
 *   (see ../trace/fifo.ts for why not a file). The mount point is created in the copy only.
 * - Native: host `strace -f` around nspawn; the service's events are those of the process that
 *   execs the entrypoint and its descendants (nspawn's own setup is filtered out by pid).
 *
 * inetd services get each gopher request on stdin in a fresh container. Listening services are
 * started once and reached from the host inside the container's network namespace (nsenter -n),
 * so the container itself never gets a network.
 */
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import type { GopherProbe, HttpProbe } from '../config/schema.js';
import { ToolError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { readElf } from '../elf/elf.js';
import { run, start, tail, type RunResult, type Started } from '../tools/exec.js';
import { nspawnArgv, TRACE_MOUNT } from '../tools/nspawn.js';
import { TraceFifo } from '../trace/fifo.js';
import {
  ENOENT,
  parseHostStrace,
  parseQemuStrace,
  type TraceEvent,
} from '../trace/parse-strace.js';
import { isUnder, resolveTraced } from '../root/lookup.js';
import { hostArch } from '../core/arch.js';
import { unmount } from '../harness/mounts.js';
import { registerCleanup } from '../core/cleanup.js';

export type ProbeResponse = Buffer | { status: number; body: Buffer };

export interface TraceOptions {
  /** Scratch space: the writable copy of the root, the data dir and the raw traces go here. */
  workDir: string;
  logger: Logger;
  /** The host's architecture ('aarch64' | 'x86_64'); default this machine's. */
  arch?: string;
  signal?: AbortSignal;
}

export interface TraceResult {
  events: TraceEvent[];
  responses: Record<string, ProbeResponse>;
  /** Paths the service created or changed under the data path (they belong to the data template). */
  writtenUnderData: string[];
  /** Paths it wrote elsewhere: on the board's read-only root these writes fail. */
  writtenOutsideData: string[];
  /** Paths looked up and not found (ENOENT), which may hint at a missing file. */
  failedLookups: string[];
  /** command[0] and its PT_INTERP, which QEMU does not log. */
  entrypoint: string;
  interp?: string;
  emulated: boolean;
  /** Wall time of the traced runs. */
  seconds: number;
  /** Raw trace files kept for debugging. */
  traceFiles: string[];
}

/** The trace environment for emulated runs: one FIFO for all processes (not `%d`, see fifo.ts). */
export const QEMU_TRACE_FILE = 'qemu.log';
export function qemuFifoEnv(): Record<string, string> {
  return { QEMU_STRACE: '1', QEMU_LOG_FILENAME: `${TRACE_MOUNT}/${QEMU_TRACE_FILE}` };
}

/** Syscall classes host strace records: files, fds (dup/close/getdents/fchdir) and processes. */
export const STRACE_FLAGS = [
  '-f',
  '-qq',
  '-s',
  '4096',
  '-e',
  'trace=%file,%desc,%process',
] as const;

/** Where and how one set of probe runs happens (the traced run and the self-check share it). */
export interface RunTarget {
  root: string;
  dataDir: string;
  readOnly: boolean;
  harden: boolean;
  /** Trace dir bound at /lhc-trace and how to trace, or none (self-check). */
  trace?: { dir: string; mode: 'qemu' | 'strace' };
}

function containerArgv(config: LhcConfig, t: RunTarget): string[] {
  const env = { ...config.service.env, ...(t.trace?.mode === 'qemu' ? qemuFifoEnv() : {}) };
  return nspawnArgv({
    root: t.root,
    command: config.service.command,
    readOnly: t.readOnly,
    dataDir: t.dataDir,
    dataPath: config.data.path,
    binds: t.trace?.mode === 'qemu' ? [{ host: t.trace.dir, container: TRACE_MOUNT }] : [],
    env,
    user: config.service.user,
    ...(config.service.workdir ? { workdir: config.service.workdir } : {}),
    harden: t.harden,
    privateNetwork: true,
  });
}

/** One container run per request (inetd), or one long run probed over its namespace (listen). */
/** The container's argv for one run, wrapped in the tracer that `t` asks for. */
async function tracedArgv(
  config: LhcConfig,
  t: RunTarget,
  straceName: string,
): Promise<{ argv: string[]; fifo?: TraceFifo; straceFile?: string }> {
  const argv = containerArgv(config, t);
  if (t.trace?.mode === 'qemu') {
    const fifoPath = path.join(t.trace.dir, QEMU_TRACE_FILE);
    await rm(fifoPath, { force: true });
    return { argv, fifo: await TraceFifo.create(fifoPath) };
  }
  if (t.trace?.mode === 'strace') {
    const straceFile = path.join(t.trace.dir, straceName);
    return { argv: ['strace', ...STRACE_FLAGS, '-o', straceFile, '--', ...argv], straceFile };
  }
  return { argv };
}

export interface ProbeRun {
  responses: Record<string, ProbeResponse>;
  /** Raw trace text per container run. */
  traces: string[];
  traceFiles: string[];
}

function crashError(
  config: LhcConfig,
  what: string,
  exitCode: number | undefined,
  stderr: string,
): UserError {
  const code = exitCode === undefined ? 'was killed' : `exited with code ${exitCode}`;
  return new UserError(
    `service '${config.name}' (${config.service.command.join(' ')}) ${code} ${what}` +
      (stderr.trim() ? `; last lines of its stderr:\n${tail(stderr, 15)}` : ' (no stderr output)'),
  );
}

async function withTimeout<T>(config: LhcConfig, what: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof ToolError && e.reason.startsWith('timed out')) {
      throw new UserError(
        `service '${config.name}' did not finish ${what} within service.timeout (${config.service.timeout} s)` +
          (e.stderrTail ? `; last lines of its stderr:\n${e.stderrTail}` : ''),
      );
    }
    throw e;
  }
}

async function runInetd(
  config: LhcConfig,
  t: RunTarget,
  logger: Logger,
  signal?: AbortSignal,
): Promise<ProbeRun> {
  const out: ProbeRun = { responses: {}, traces: [], traceFiles: [] };
  for (const [i, probe] of config.probes.entries()) {
    if (probe.type !== 'gopher') {
      throw new UserError(
        `probe '${probe.name}' is an ${probe.type} probe, but the service is inetd-style (service.inetd: true) and speaks only on stdin/stdout: use gopher probes, or service.listen`,
      );
    }
    const { argv, fifo, straceFile } = await tracedArgv(config, t, `strace.${i}.log`);
    let r: RunResult;
    try {
      r = await withTimeout(
        config,
        `probe '${probe.name}'`,
        run(argv, {
          privileged: true,
          input: Buffer.from(`${probe.selector}\r\n`, 'utf8'),
          binary: true,
          reject: false,
          timeoutMs: config.service.timeout * 1000,
          logger,
          ...(signal ? { signal } : {}),
        }),
      );
    } finally {
      if (fifo) {
        const text = await fifo.finish();
        out.traces.push(text);
      }
    }
    if (straceFile) {
      out.traces.push(await readFile(straceFile, 'utf8').catch(() => ''));
      out.traceFiles.push(straceFile);
    }
    if (r.exitCode !== 0)
      throw crashError(config, `while answering probe '${probe.name}'`, r.exitCode, r.stderr);
    out.responses[probe.name] = r.stdoutBytes;
  }
  return out;
}

/** Parent pid of every process, from /proc. */
function processTree(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // Exited while we looked.
    }
  }
  return children;
}

/** Processes that are part of the launch, not the payload. */
const LAUNCHERS = new Set(['systemd-nspawn', 'sudo', 'strace']);

/**
 * The container's payload: the first descendant of `pid` living in another network namespace.
 * Without the right to read another user's namespace links (a non-root builder using sudo), the
 * first descendant that is no longer nspawn (or sudo/strace) is the payload after its exec.
 */
export function findPayloadPid(pid: number): number | undefined {
  let ownNet: string | undefined;
  try {
    ownNet = readlinkSync('/proc/self/ns/net');
  } catch {
    ownNet = undefined;
  }
  const children = processTree();
  const queue = [...(children.get(pid) ?? [])];
  while (queue.length > 0) {
    const p = queue.shift()!;
    try {
      if (ownNet !== undefined && readlinkSync(`/proc/${p}/ns/net`) !== ownNet) return p;
    } catch (e) {
      if (
        (e as NodeJS.ErrnoException).code === 'EACCES' ||
        (e as NodeJS.ErrnoException).code === 'EPERM'
      ) {
        const comm = readFileSync(`/proc/${p}/comm`, 'utf8').trim();
        if (!LAUNCHERS.has(comm)) return p;
      }
      // Otherwise gone.
    }
    queue.push(...(children.get(p) ?? []));
  }
  return undefined;
}

/**
 * True when a TCP socket of pid's network namespace listens on port; undefined when this
 * process may not read the namespace's tables.
 */
export function isListening(pid: number, port: number): boolean | undefined {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let readable = false;
  for (const table of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
      readable = true;
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3 && f[1]!.endsWith(`:${hexPort}`) && f[3] === '0A') return true;
    }
  }
  return readable ? false : undefined;
}

/** Connect test from inside the namespace, for when /proc does not tell us (needs privilege). */
const CONNECT_CHECK =
  "const s=require('net').connect(+process.argv[1],'127.0.0.1',()=>{s.destroy();process.exit(0)});" +
  "s.on('error',()=>process.exit(1));";

async function portOpen(pid: number, port: number, logger: Logger): Promise<boolean> {
  const known = isListening(pid, port);
  if (known !== undefined) return known;
  const r = await run(
    ['nsenter', '-t', String(pid), '-n', '--', process.execPath, '-e', CONNECT_CHECK, String(port)],
    {
      privileged: true,
      reject: false,
      timeoutMs: 10_000,
      logger,
    },
  );
  return r.exitCode === 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A tiny raw-TCP Gopher client run inside the namespace with this same Node binary. */
const GOPHER_CLIENT =
  "const s=require('net').connect(+process.argv[1],'127.0.0.1',()=>s.end(process.argv[2]+'\\r\\n'));" +
  "const c=[];s.on('data',d=>c.push(d));s.on('end',()=>process.stdout.write(Buffer.concat(c)));" +
  "s.on('error',e=>{console.error(e.message);process.exit(1)});";

async function probeListening(
  config: LhcConfig,
  pid: number,
  port: number,
  probe: GopherProbe | HttpProbe,
  workDir: string,
  logger: Logger,
): Promise<ProbeResponse> {
  const ns = ['nsenter', '-t', String(pid), '-n', '--'];
  const timeoutMs = config.service.timeout * 1000;
  if (probe.type === 'gopher') {
    const r = await run(
      [...ns, process.execPath, '-e', GOPHER_CLIENT, String(port), probe.selector],
      {
        privileged: true,
        binary: true,
        timeoutMs,
        logger,
      },
    );
    return r.stdoutBytes;
  }
  const bodyFile = path.join(workDir, `probe-${probe.name}.body`);
  await rm(bodyFile, { force: true });
  const url = `http://127.0.0.1:${port}${probe.path}`;
  const r = await run(
    [
      ...ns,
      'curl',
      '-s',
      '-S',
      '-o',
      bodyFile,
      '-w',
      '%{http_code}',
      '--max-time',
      String(config.service.timeout),
      url,
    ],
    { privileged: true, timeoutMs, logger, reject: false },
  );
  if (r.exitCode !== 0) {
    throw new UserError(
      `probe '${probe.name}': ${url} inside the container's network namespace failed: ${tail(r.stderr, 5) || `curl exit code ${r.exitCode}`}`,
    );
  }
  const body = await readFile(bodyFile).catch(() => Buffer.alloc(0));
  return { status: Number(r.stdout.trim()), body };
}

async function runListening(
  config: LhcConfig,
  t: RunTarget,
  workDir: string,
  logger: Logger,
): Promise<ProbeRun> {
  const port = config.service.listen!;
  const { argv, fifo, straceFile } = await tracedArgv(config, t, 'strace.log');
  const out: ProbeRun = { responses: {}, traces: [], traceFiles: straceFile ? [straceFile] : [] };
  let container: Started;
  try {
    container = start(argv, { privileged: true, logger });
  } catch (e) {
    // The FIFO's reader would otherwise wait forever for a writer that never came.
    await fifo?.finish();
    throw e;
  }
  const cleanup = registerCleanup(`container ${config.name}`, () => container.stop());
  // Set by the exit handler at any await; read through the object so TS does not narrow it away.
  const state: { exited?: { exitCode: number | undefined; stderr: string } } = {};
  void container.exited.then((e) => (state.exited = e));
  try {
    const deadline = Date.now() + config.service.timeout * 1000;
    let pid: number | undefined;
    // Wait for the payload to exist and to listen, bounded, noticing an early exit.
    for (;;) {
      const gone = state.exited;
      if (gone)
        throw crashError(config, `before listening on port ${port}`, gone.exitCode, gone.stderr);
      pid ??= findPayloadPid(container.pid);
      if (pid !== undefined && (await portOpen(pid, port, logger))) break;
      if (Date.now() > deadline) {
        throw new UserError(
          `service '${config.name}' did not listen on port ${port} within service.timeout (${config.service.timeout} s)`,
        );
      }
      await sleep(100);
    }
    logger.debug(`service listens on ${port} in the namespace of pid ${pid}`);
    for (const probe of config.probes) {
      out.responses[probe.name] = await probeListening(config, pid, port, probe, workDir, logger);
      const gone = state.exited;
      if (gone)
        throw crashError(
          config,
          `while answering probe '${probe.name}'`,
          gone.exitCode,
          gone.stderr,
        );
    }
  } finally {
    await cleanup.run();
    if (fifo) out.traces.push(await fifo.finish());
  }
  if (straceFile) out.traces.push(await readFile(straceFile, 'utf8').catch(() => ''));
  return out;
}

/** Runs every probe against a root, the same way for the traced run and the self-check. */
export async function runProbes(
  config: LhcConfig,
  t: RunTarget,
  o: { workDir: string; logger: Logger; signal?: AbortSignal },
): Promise<ProbeRun> {
  return config.service.listen !== undefined
    ? runListening(config, t, o.workDir, o.logger)
    : runInetd(config, t, o.logger, o.signal);
}

/** A fresh data dir for one run: the root's own data path contents, then the config's template. */
export async function seedDataDir(config: LhcConfig, root: string, dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const inRoot = resolveTraced(root, config.data.path);
  if (inRoot.exists && inRoot.kind === 'dir' && (await readdir(inRoot.host)).length > 0) {
    await run(['cp', '-a', '--', `${inRoot.host}/.`, `${dir}/`], { privileged: true });
  }
  // data.template is not copied again here: the root stage already put it at the data path
  // with normalized modes, and a second copy from the checkout would bring its umask back.
}

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/**
 * An overlay over the root: writable, instant and the root stays untouched (a 200 MB Debian root
 * takes ~14 s to copy). False when the kernel or the filesystem refuses (e.g. overlay on
 * overlay in some containers); the caller then copies.
 */
async function mountOverlay(
  lower: string,
  upper: string,
  work: string,
  target: string,
  logger: Logger,
): Promise<boolean> {
  const r = await run(
    [
      'mount',
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
      target,
    ],
    { privileged: true, reject: false, logger },
  );
  if (r.exitCode !== 0)
    logger.debug(`overlay mount failed, copying the root instead: ${r.stderr.trim()}`);
  return r.exitCode === 0;
}

export async function traceService(
  config: LhcConfig,
  root: string,
  opts: TraceOptions,
): Promise<TraceResult> {
  const { logger, workDir } = opts;
  if (!(await isDir(root))) throw new UserError(`root directory ${root} does not exist`);
  const emulated = (opts.arch ?? hostArch()) !== config.arch;
  const entry = resolveTraced(root, config.service.command[0]!);
  if (!entry.exists || entry.kind !== 'file') {
    throw new UserError(
      `the entrypoint ${config.service.command[0]} (service.command[0]) is not a file in the root`,
    );
  }
  const elf = await readElf(entry.host);
  const interp = elf?.interp;

  const copy = path.join(workDir, 'trace-root');
  const traceDir = path.join(workDir, 'trace');
  const dataDir = path.join(workDir, 'trace-data');
  await mkdir(workDir, { recursive: true });
  await rm(traceDir, { recursive: true, force: true });
  await mkdir(traceDir, { recursive: true, mode: 0o755 });
  const upper = path.join(workDir, 'trace-upper');
  const overlayWork = path.join(workDir, 'trace-overlay-work');
  const state = { mounted: false };
  const removeCopy = registerCleanup(`traced root copy ${copy}`, async () => {
    // A payload that outlived a killed nspawn keeps the overlay busy: detach it lazily then,
    // and never let a failed cleanup replace the error that brought us here.
    if (state.mounted) await unmount(copy, logger);
    state.mounted = false;
    const r = await run(['rm', '-rf', '--one-file-system', '--', copy, upper, overlayWork], {
      privileged: true,
      reject: false,
    });
    if (r.exitCode !== 0) logger.warn(`could not remove ${copy}: ${r.stderr.trim()}`);
  });
  try {
    await logger.group('writable copy of the root for the traced run', async () => {
      await run(['rm', '-rf', '--one-file-system', '--', copy, upper, overlayWork], {
        privileged: true,
      });
      for (const d of [copy, upper, overlayWork]) await mkdir(d, { recursive: true });
      state.mounted = await mountOverlay(root, upper, overlayWork, copy, logger);
      if (!state.mounted) {
        await run(['cp', '-a', '--reflink=auto', '--', `${root}/.`, `${copy}/`], {
          privileged: true,
        });
      }
      // Mount points nspawn needs; they exist in this copy only, never in the pruned root.
      const mountPoints = [TRACE_MOUNT, config.data.path, '/usr'].map((p) => path.join(copy, p));
      await run(['mkdir', '-p', '-m', '0755', '--', ...mountPoints], { privileged: true });
    });
    await seedDataDir(config, root, dataDir);

    const started = Date.now();
    const probed = await logger.group(
      `traced run of ${config.service.command.join(' ')} (${emulated ? 'QEMU_STRACE' : 'host strace'}, ${config.probes.length} probes)`,
      () =>
        runProbes(
          config,
          {
            root: copy,
            dataDir,
            readOnly: false,
            harden: false,
            trace: { dir: traceDir, mode: emulated ? 'qemu' : 'strace' },
          },
          { workDir, logger, ...(opts.signal ? { signal: opts.signal } : {}) },
        ),
    );
    const seconds = (Date.now() - started) / 1000;

    const parseOpts = {
      cwd: config.service.workdir ?? '/',
      entrypoint: config.service.command[0]!,
      ...(emulated ? {} : { payloadExec: config.service.command[0]! }),
    };
    const events: TraceEvent[] = [];
    const traceFiles = [...probed.traceFiles];
    for (const [i, text] of probed.traces.entries()) {
      const parsed = emulated ? parseQemuStrace(text, parseOpts) : parseHostStrace(text, parseOpts);
      if (emulated) {
        // Keep the raw stream for debugging; the FIFO itself holds nothing afterwards.
        const file = path.join(traceDir, `qemu.${i}.txt`);
        await writeFile(file, text);
        traceFiles.push(file);
      }
      if (parsed.skipped > 0)
        logger.debug(`trace ${i}: ${parsed.skipped} unusable call(s) skipped`);
      events.push(...parsed.events);
    }
    if (events.length === 0) {
      throw new UserError(
        `the traced run of '${config.name}' recorded no file access at all: ` +
          (emulated
            ? 'QEMU_STRACE produced nothing (is the entrypoint an aarch64 binary run through binfmt_misc? check `lhc doctor`)'
            : 'host strace saw no exec of the entrypoint'),
      );
    }
    // QEMU loads the entrypoint and its interpreter itself, so neither shows up in its trace.
    events.unshift({
      pid: 0,
      op: 'exec',
      path: config.service.command[0]!,
      result: 'ok',
      write: false,
      syscall: 'entrypoint',
    });
    if (interp)
      events.unshift({
        pid: 0,
        op: 'exec',
        path: interp,
        result: 'ok',
        write: false,
        syscall: 'pt-interp',
      });

    const written = new Set<string>();
    const writtenOutside = new Set<string>();
    const failed = new Set<string>();
    for (const e of events) {
      if (e.write && e.result === 'ok')
        (isUnder(e.path, config.data.path) ? written : writtenOutside).add(e.path);
      if (e.result === 'error' && e.errno === ENOENT && !e.write) failed.add(e.path);
    }
    for (const p of writtenOutside)
      if (isUnder(p, '/dev') || isUnder(p, '/proc') || isUnder(p, '/sys')) writtenOutside.delete(p);
    if (writtenOutside.size > 0) {
      logger.warn(
        `the service wrote outside ${config.data.path}, which is read-only on the board: ${[...writtenOutside].sort().join(', ')}`,
      );
    }
    return {
      events,
      responses: probed.responses,
      writtenUnderData: [...written].sort(),
      writtenOutsideData: [...writtenOutside].sort(),
      failedLookups: [...failed].sort(),
      entrypoint: config.service.command[0]!,
      ...(interp ? { interp } : {}),
      emulated,
      seconds,
      traceFiles,
    };
  } finally {
    await removeCopy.run();
  }
}
