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
 *
 * The pipe is read and written through the event loop (a net.Socket on the fd, non-blocking), not
 * with fs.read: that would keep one thread of libuv's pool (4 by default) blocked per FIFO for as
 * long as its container runs, and with as many containers as the pool has threads, every other
 * file operation of the process would wait behind them.
 */
import { randomBytes } from 'node:crypto';
import { constants, openSync } from 'node:fs';
import net from 'node:net';
import { run } from '../tools/exec.js';

export class TraceFifo {
  private readonly socket: net.Socket;
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
  private failed: { error: unknown } | undefined;
  private ended: Promise<string> | undefined;

  private constructor(readonly path: string) {
    // Read-write: never EOF between writers, and no writer waits for a reader.
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    this.socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    this.socket.on('data', (chunk: Buffer) => {
      if (this.take(chunk)) this.socket.destroy();
    });
    this.socket.on('error', (error: unknown) => {
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

  /** Writes a marker (shorter than PIPE_BUF: one piece in the pipe) and resolves with the text before it. */
  private mark(marker: string, last: boolean): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      if (this.failed) return reject(this.failed.error);
      const bytes = Buffer.from(marker, 'latin1');
      this.waiting.push({ marker: bytes, resolve, reject, last });
      this.socket.write(bytes);
    });
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
    this.ended ??= this.mark(`\n#lhc-trace-end-${this.id}\n`, true);
    return this.ended;
  }
}
