/**
 * The tracer as a hook around container runs (see ../harness/run.ts).
 *
 * - Emulated (host arch differs from the target): QEMU_STRACE into a FIFO bound at /lhc-trace
 *   (see fifo.ts for why not a file). The mount point is created in the traced copy only.
 * - Native: host `strace -f` around nspawn; the service's events are those of the process that
 *   execs the entrypoint and its descendants (nspawn's own setup is filtered out by pid).
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
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

/** QEMU_STRACE for every guest process, collected through a FIFO in `dir`. */
export function qemuTraceHook(dir: string): RunHook {
  // FIFOs made ahead by prepare(), one mkfifo for the whole run.
  const made = new Set<number>();
  return {
    env: qemuFifoEnv,
    binds: [{ host: dir, container: TRACE_MOUNT }],
    async prepare(count) {
      const indices = Array.from({ length: count }, (_, i) => i);
      const paths = indices.map((i) => path.join(dir, qemuTraceFile(i)));
      await Promise.all(paths.map((p) => rm(p, { force: true })));
      await TraceFifo.make(paths);
      for (const i of indices) made.add(i);
    },
    async begin(argv, index) {
      const fifoPath = path.join(dir, qemuTraceFile(index));
      let fifo: TraceFifo;
      if (index !== undefined && made.delete(index)) fifo = TraceFifo.open(fifoPath);
      else {
        await rm(fifoPath, { force: true });
        fifo = await TraceFifo.create(fifoPath);
      }
      return { argv, end: async () => ({ text: await fifo.finish() }) };
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
