/**
 * Collects a trace stream through a named pipe.
 *
 * Why a pipe and not a file: QEMU opens QEMU_LOG_FILENAME with fopen(..., "w") in every new
 * process, i.e. after every execve. With one file, each exec truncates everyone's trace; with
 * `%d` (one file per pid) a process that execs keeps its pid and truncates its own earlier lines
 * (verified with qemu 7.2: `sh -c '...; cat x'` loses the shell's lines when it execs the last
 * command). Opening a FIFO with O_TRUNC truncates nothing, so every process's lines arrive.
 *
 * The reader holds the pipe open read-write, so the stream never hits EOF between writers and a
 * writer never blocks for want of a reader; the end is marked by a sentinel line written by us
 * after the container has exited (all writers gone, so it is the last line in the pipe).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, read, writeSync } from 'node:fs';
import { run } from '../tools/exec.js';

export class TraceFifo {
  private readonly fd: number;
  private readonly chunks: Buffer[] = [];
  private readonly sentinel = `\n#lhc-trace-end-${randomBytes(6).toString('hex')}\n`;
  private readonly done: Promise<void>;
  private closed = false;

  private constructor(readonly path: string) {
    this.fd = openSync(path, constants.O_RDWR);
    this.done = this.pump();
  }

  /** Creates the FIFO (mode 0666: the service may run as any user) and starts reading it. */
  static async create(path: string): Promise<TraceFifo> {
    await TraceFifo.make([path]);
    return new TraceFifo(path);
  }

  /**
   * Creates FIFOs (mode 0666) in one mkfifo run, so a traced run of many containers pays one
   * process start for all of them, not one each; open() then reads one.
   */
  static async make(paths: readonly string[]): Promise<void> {
    if (paths.length > 0) await run(['mkfifo', '-m', '0666', '--', ...paths]);
  }

  /** Starts reading a FIFO that make() created. */
  static open(path: string): TraceFifo {
    return new TraceFifo(path);
  }

  private async pump(): Promise<void> {
    // A pipe holds 64 KiB, so no read returns more; unzeroed, only the pages reads reach are touched.
    const buf = Buffer.allocUnsafe(64 * 1024);
    let tail = '';
    for (;;) {
      const n = await new Promise<number>((resolve, reject) =>
        read(this.fd, buf, 0, buf.length, null, (err, bytes) =>
          err ? reject(err) : resolve(bytes),
        ),
      );
      if (n <= 0) return;
      const chunk = Buffer.from(buf.subarray(0, n));
      this.chunks.push(chunk);
      const keep = this.sentinel.length * 2;
      tail = (tail + chunk.subarray(-keep).toString('latin1')).slice(-keep);
      if (tail.includes(this.sentinel)) return;
    }
  }

  /** Call once every writer has exited: returns everything written, without the sentinel. */
  async finish(): Promise<string> {
    if (!this.closed) {
      writeSync(this.fd, this.sentinel);
      await this.done;
      this.closed = true;
      closeSync(this.fd);
    }
    const text = Buffer.concat(this.chunks).toString('utf8');
    const at = text.lastIndexOf(this.sentinel);
    return at >= 0 ? text.slice(0, at) : text;
  }
}
