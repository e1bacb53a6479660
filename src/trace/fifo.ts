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
 *
 * A container that serves one connection after another (harness/run.ts, runInetdPooled) cuts the
 * stream the same way between connections: once a connection's processes are gone, a marker
 * written by us is the last line of theirs, and what came before it is that connection's trace.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, read, writeSync } from 'node:fs';
import { run } from '../tools/exec.js';

export class TraceFifo {
  private readonly fd: number;
  private readonly writeFd: number;
  /** What arrived since the last cut, and how many bytes that is. */
  private chunks: Buffer[] = [];
  private length = 0;
  private readonly id = randomBytes(6).toString('hex');
  private cuts = 0;
  /** Markers written and not yet read back, oldest first, with who waits for the text before each. */
  private readonly waiting: {
    marker: Buffer;
    resolve(text: string): void;
    reject(e: unknown): void;
    last: boolean;
  }[] = [];
  private readonly done: Promise<void>;
  private failed: { error: unknown } | undefined;
  private ended: Promise<string> | undefined;

  private constructor(readonly path: string) {
    this.fd = openSync(path, constants.O_RDWR);
    // Opening for writing does not wait: this process already holds a read end.
    this.writeFd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    this.done = this.pump().catch((error: unknown) => {
      this.failed = { error };
      for (const w of this.waiting.splice(0)) w.reject(error);
    });
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
    for (;;) {
      const n = await new Promise<number>((resolve, reject) =>
        read(this.fd, buf, 0, buf.length, null, (err, bytes) =>
          err ? reject(err) : resolve(bytes),
        ),
      );
      if (n <= 0) return;
      if (this.take(Buffer.from(buf.subarray(0, n)))) return;
    }
  }

  /** Adds a chunk and hands out the text before every marker now complete; true after the last. */
  private take(chunk: Buffer): boolean {
    const before = this.length;
    this.chunks.push(chunk);
    this.length += chunk.length;
    let from = before;
    for (;;) {
      const w = this.waiting[0];
      if (!w) return false;
      // Only the new bytes and the marker's length before them can hold a marker not yet seen.
      const start = Math.max(0, from - w.marker.length + 1);
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [all];
      const at = all.indexOf(w.marker, start);
      if (at < 0) return false;
      const rest = all.subarray(at + w.marker.length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.length = rest.length;
      from = 0;
      this.waiting.shift();
      w.resolve(all.subarray(0, at).toString('utf8'));
      if (w.last) return true;
    }
  }

  private mark(marker: string, last: boolean): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      if (this.failed) return reject(this.failed.error);
      const bytes = Buffer.from(marker, 'latin1');
      this.waiting.push({ marker: bytes, resolve, reject, last });
      this.writeMarker(bytes, reject);
    });
  }

  /**
   * Shorter than PIPE_BUF, so it reaches the pipe in one piece. Not through the thread pool (each
   * FIFO being read keeps one of its threads blocked) and never blocking the loop (a full pipe
   * drains only when this loop reads): non-blocking, retried while the pipe is full.
   */
  private writeMarker(bytes: Buffer, reject: (e: unknown) => void): void {
    try {
      writeSync(this.writeFd, bytes);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
        setTimeout(() => this.writeMarker(bytes, reject), 1);
        return;
      }
      this.waiting.splice(
        this.waiting.findIndex((w) => w.marker === bytes),
        1,
      );
      reject(e);
    }
  }

  /**
   * Call once every writer of the part so far has exited: returns what was written since the
   * previous cut (or the start), and the stream goes on.
   */
  cut(): Promise<string> {
    if (this.ended) throw new Error(`trace FIFO ${this.path} is already finished`);
    return this.mark(`\n#lhc-trace-cut-${this.id}-${this.cuts++}\n`, false);
  }

  /** Call once every writer has exited: returns everything written since the last cut. */
  finish(): Promise<string> {
    this.ended ??= (async () => {
      const text = await this.mark(`\n#lhc-trace-end-${this.id}\n`, true);
      await this.done;
      closeSync(this.fd);
      closeSync(this.writeFd);
      return text;
    })();
    return this.ended;
  }
}
