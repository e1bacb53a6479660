/**
 * The tracer as a hook around container runs (see ../harness/run.ts).
 *
 * - Emulated (host arch differs from the target): QEMU_STRACE into a FIFO bound at /lhc-trace
 *   (see fifo.ts for why not a file). The mount point is created in the traced copy only. An
 *   inetd service's connections run one after another in a few containers, each started by an
 *   lhc-accept built for the host and kept in /lhc-trace (see pool() and harness/run.ts); the
 *   FIFO is cut between connections.
 * - Native: host `strace -f` around nspawn; the service's events are those of the process that
 *   execs the entrypoint and its descendants (nspawn's own setup is filtered out by pid).
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { acceptElf } from '../accept/accept-elf.js';
import { hostArch } from '../core/arch.js';
import type { RunHook } from '../harness/run.js';
import { TRACE_MOUNT } from '../tools/nspawn.js';
import { TraceFifo } from './fifo.js';

/**
 * The FIFO of one emulated run, shared by all its processes (not `%d`, see fifo.ts); each run
 * has its own, so that runs can go in parallel.
 */
export function qemuTraceFile(index: number | undefined): string {
  return index === undefined ? 'qemu.log' : `qemu.${index}.log`;
}
export function qemuFifoEnv(index: number | undefined): Record<string, string> {
  return { QEMU_STRACE: '1', QEMU_LOG_FILENAME: `${TRACE_MOUNT}/${qemuTraceFile(index)}` };
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

/** The connection loop of the pooled traced containers, in the trace dir (TRACE_MOUNT inside). */
export const TRACE_ACCEPT = 'lhc-accept';

/**
 * QEMU_STRACE for every guest process, collected through a FIFO in `dir`. `pooled` (default
 * true): inetd probes may share containers (pool()).
 */
export function qemuTraceHook(dir: string, pooled = true): RunHook {
  // FIFOs made ahead by prepare(), one mkfifo for the whole run.
  const made = new Set<number>();
  const prepare = async (count: number): Promise<void> => {
    const indices = Array.from({ length: count }, (_, i) => i);
    const paths = indices.map((i) => path.join(dir, qemuTraceFile(i)));
    await Promise.all(paths.map((p) => rm(p, { force: true })));
    await TraceFifo.make(paths);
    for (const i of indices) made.add(i);
  };
  const arch = hostArch();
  return {
    env: qemuFifoEnv,
    binds: [{ host: dir, container: TRACE_MOUNT }],
    prepare,
    // lhc-accept runs natively (the host's architecture): none of its own calls reach the trace,
    // and each connection's process starts QEMU afresh at its exec, as a container's first does.
    ...(pooled && (arch === 'x86_64' || arch === 'aarch64')
      ? {
          async pool(count: number) {
            const file = path.join(dir, TRACE_ACCEPT);
            await rm(file, { force: true });
            await writeFile(file, acceptElf(arch), { mode: 0o755 });
            await prepare(count);
            return `${TRACE_MOUNT}/${TRACE_ACCEPT}`;
          },
        }
      : {}),
    async begin(argv, index) {
      const fifoPath = path.join(dir, qemuTraceFile(index));
      let fifo: TraceFifo;
      if (index !== undefined && made.delete(index)) fifo = TraceFifo.open(fifoPath);
      else {
        await rm(fifoPath, { force: true });
        fifo = await TraceFifo.create(fifoPath);
      }
      return {
        argv,
        end: async () => ({ text: await fifo.finish() }),
        cut: async () => ({ text: await fifo.cut() }),
      };
    },
  };
}

/** Host strace around the container, one log file per run in `dir`. */
export function straceHook(dir: string): RunHook {
  return {
    async begin(argv, index) {
      const file = path.join(dir, index === undefined ? 'strace.log' : `strace.${index}.log`);
      return {
        argv: ['strace', ...STRACE_FLAGS, '-o', file, '--', ...argv],
        end: async () => ({ text: await readFile(file, 'utf8').catch(() => ''), file }),
      };
    },
  };
}
