/**
 * One download attempt: stream a URL (http, https or file) into a file while hashing it.
 * Retrying, choosing among URLs and deciding what lands in the store is the store's job.
 */
import { humanBytes } from '../core/format.js';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

/** Largest download when the input sets no `max-bytes`: far above any Lua source or base tarball. */
export const DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 1024 * 1024 * 1024;
/** Longest one download attempt may take, however steadily data trickles in. */
export const DEFAULT_DOWNLOAD_DEADLINE_MS = 15 * 60 * 1000;

export interface DownloadOptions {
  /** Milliseconds without progress (connecting or between chunks) before giving up. Default 30 s. */
  idleTimeoutMs?: number;
  /**
   * Milliseconds the whole attempt may take, connecting included. Default 15 min. The idle timeout
   * alone lets a server that sends one byte every 20 s hold a build forever.
   */
  deadlineMs?: number;
  /** Bytes the content may have; more (announced by Content-Length or received) fails at once. */
  maxBytes?: number;
  logger?: Logger;
  /** Shown in progress lines; default the URL. */
  label?: string;
  /** Milliseconds between progress lines. Default 2 s. */
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

export interface DownloadResult {
  bytes: number;
  sha256: string;
}

/** A failed attempt; `transient` failures (network, 5xx, timeouts) are worth retrying. */
export class DownloadError extends UserError {
  constructor(
    readonly url: string,
    readonly reason: string,
    readonly transient: boolean,
  ) {
    super(`${url}: ${reason}`);
  }
}

export const formatBytes = humanBytes;

const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host lookup failed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
};

/** Why a fetch() failed, from undici's nested causes (`fetch failed` alone says nothing). */
function networkReason(e: unknown): string {
  let cur: unknown = e;
  const parts: string[] = [];
  for (let depth = 0; cur && depth < 5; depth++) {
    const err = cur as { code?: string; message?: string; cause?: unknown };
    if (err.code) return `${NETWORK_CODES[err.code] ?? err.message ?? 'error'} (${err.code})`;
    if (err.message) parts.push(err.message);
    cur = err.cause;
  }
  return parts.join(': ') || String(e);
}

async function openSource(
  url: string,
  signal: AbortSignal,
): Promise<{ stream: Readable; total: number | undefined }> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DownloadError(url, 'not a valid URL', false);
  }
  if (parsed.protocol === 'file:') {
    const file = fileURLToPath(parsed);
    try {
      const st = await stat(file);
      if (!st.isFile()) throw new DownloadError(url, 'not a regular file', false);
      return { stream: createReadStream(file, { signal }), total: st.size };
    } catch (e) {
      if (e instanceof DownloadError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new DownloadError(
        url,
        code === 'ENOENT' ? 'file not found' : (code ?? String(e)),
        false,
      );
    }
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new DownloadError(
      url,
      `unsupported URL scheme ${parsed.protocol} (use http, https or file)`,
      false,
    );
  }
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'follow' });
  } catch (e) {
    if (signal.aborted) throw e;
    throw new DownloadError(url, networkReason(e), true);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => {});
    const reason = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
    // 408/429/5xx may pass; other 4xx (404, 403) will not.
    throw new DownloadError(
      url,
      reason,
      res.status >= 500 || res.status === 408 || res.status === 429,
    );
  }
  const len = Number(res.headers.get('content-length'));
  return {
    stream: Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>),
    total: Number.isFinite(len) && len > 0 ? len : undefined,
  };
}

function tooBigReason(what: string, maxBytes: number): string {
  return `${what} than the size cap of ${formatBytes(maxBytes)} (${maxBytes} bytes); raise the input's max-bytes in lhc.yml if it is legitimate`;
}

/** Streams `url` into `dest` (created or truncated), hashing as it writes. */
export async function download(
  url: string,
  dest: string,
  opts: DownloadOptions = {},
): Promise<DownloadResult> {
  const idle = opts.idleTimeoutMs ?? 30_000;
  const deadline = opts.deadlineMs ?? DEFAULT_DOWNLOAD_DEADLINE_MS;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_DOWNLOAD_BYTES;
  const label = opts.label ?? url;
  const ac = new AbortController();
  let timedOut = false;
  let pastDeadline = false;
  let tooBig = false;
  let timer: NodeJS.Timeout | undefined;
  const deadlineTimer = setTimeout(() => {
    pastDeadline = true;
    ac.abort();
  }, deadline);
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, idle);
  };
  const onOuterAbort = () => ac.abort();
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const hash = createHash('sha256');
  let bytes = 0;
  let total: number | undefined;
  let lastReport = Date.now();
  const every = opts.progressIntervalMs ?? 2_000;
  let out: WriteStream | undefined;
  try {
    arm();
    const src = await openSource(url, ac.signal);
    total = src.total;
    if (total !== undefined && total > maxBytes) {
      src.stream.destroy();
      throw new DownloadError(
        url,
        tooBigReason(`announces ${formatBytes(total)}, more`, maxBytes),
        false,
      );
    }
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        arm();
        if (bytes + chunk.length > maxBytes) {
          tooBig = true;
          ac.abort();
          cb(new Error('size cap reached'));
          return;
        }
        hash.update(chunk);
        bytes += chunk.length;
        const now = Date.now();
        if (now - lastReport >= every) {
          lastReport = now;
          opts.logger?.info(
            `${label}: ${formatBytes(bytes)}${total ? ` / ${formatBytes(total)} (${Math.floor((bytes / total) * 100)}%)` : ''}`,
          );
        }
        cb(null, chunk);
      },
    });
    out = createWriteStream(dest);
    await pipeline(src.stream, meter, out, { signal: ac.signal });
  } catch (e) {
    // A transfer that fails before the file is open would otherwise create it after the caller
    // removed it: wait until the stream has opened (or not) and closed.
    if (out && !out.closed) await new Promise<void>((r) => out!.once('close', () => r()));
    if (e instanceof DownloadError) throw e;
    if (tooBig) throw new DownloadError(url, tooBigReason('sent more', maxBytes), false);
    // Not worth a retry: the next attempt would take as long again.
    if (pastDeadline)
      throw new DownloadError(
        url,
        `not finished after ${deadline / 1000} s (${formatBytes(bytes)} received; deadline)`,
        false,
      );
    if (timedOut) throw new DownloadError(url, `no data for ${idle / 1000} s (timed out)`, true);
    if (opts.signal?.aborted) throw new DownloadError(url, 'aborted', false);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EACCES' || code === 'EROFS') {
      throw new DownloadError(url, `cannot write ${dest}: ${code}`, false);
    }
    throw new DownloadError(
      url,
      `transfer failed after ${formatBytes(bytes)}: ${networkReason(e)}`,
      true,
    );
  } finally {
    clearTimeout(timer);
    clearTimeout(deadlineTimer);
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }
  if (total !== undefined && bytes !== total) {
    throw new DownloadError(url, `short transfer: ${bytes} of ${total} bytes`, true);
  }
  return { bytes, sha256: hash.digest('hex') };
}
