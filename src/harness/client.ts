/**
 * Talking to the booted service over a real socket: TCP on the host for socket-activated
 * services, or a Unix socket that a forwarder inside the container's network namespace bridges
 * to the service's port (the container has no network but `lo`).
 */
import http from 'node:http';
import net from 'node:net';
import type { Probe } from '../config/schema.js';
import { UserError } from '../core/errors.js';

export type Endpoint = { host: string; port: number } | { path: string };

export function describeEndpoint(e: Endpoint): string {
  return 'path' in e ? `unix:${e.path}` : `${e.host}:${e.port}`;
}

function connect(e: Endpoint): net.Socket {
  return 'path' in e ? net.connect({ path: e.path }) : net.connect({ host: e.host, port: e.port });
}

/** The bytes a Gopher client sends: the selector (a search is "selector\tquery") and CRLF. */
export function gopherRequest(selector: string): Buffer {
  return Buffer.from(`${selector}\r\n`, 'utf8');
}

/**
 * Sends `request`, half-closes nothing (Gopher servers answer after the CRLF) and reads to EOF.
 * Rejects on a connection error, on timeout and on abort, always destroying the socket.
 */
export function exchange(
  e: Endpoint,
  request: Buffer,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = connect(e);
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    const timer = setTimeout(
      () =>
        finish(
          new Error(`no complete answer from ${describeEndpoint(e)} within ${opts.timeoutMs} ms`),
        ),
      opts.timeoutMs,
    );
    const onAbort = () => finish(new Error('aborted'));
    if (opts.signal?.aborted) return finish(new Error('aborted'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    sock.on('connect', () => sock.write(request));
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => finish());
    sock.on('error', (err) => finish(err));
  });
}

/** Opens a connection and sends nothing: a socket-activated container then waits on stdin. */
export function holdOpen(e: Endpoint, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(e);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`cannot connect to ${describeEndpoint(e)} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}

/** One probe's answer, however it was fetched: the bytes, and the status for HTTP probes. */
export interface ProbeResponse {
  status?: number;
  body: Buffer;
}

export function httpGet(
  e: Endpoint,
  urlPath: string,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<Required<ProbeResponse>> {
  return new Promise((resolve, reject) => {
    const target = 'path' in e ? { socketPath: e.path } : { host: e.host, port: e.port };
    const req = http.request(
      {
        ...target,
        path: urlPath,
        method: 'GET',
        agent: false,
        signal: opts.signal,
        headers: { host: 'localhost' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) });
        });
        res.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      },
    );
    const timer = setTimeout(
      () =>
        req.destroy(
          new Error(
            `no complete HTTP answer from ${describeEndpoint(e)} within ${opts.timeoutMs} ms`,
          ),
        ),
      opts.timeoutMs,
    );
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

/** A free TCP port on 127.0.0.1 (the kernel's pick; released again for the activator to bind). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** `gopher://` URL for curl: the item type, then the selector percent-encoded byte by byte. */
export function gopherUrl(host: string, port: number, selector: string, type = '1'): string {
  const enc = [...Buffer.from(selector, 'utf8')]
    .map((b) =>
      /[A-Za-z0-9\-._~/]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
  return `gopher://${host}:${port}/${type}${enc}`;
}

/**
 * How a probe reaches the service: a connection to it (TCP, or the Unix socket of a forwarder
 * into its network namespace), or the stdin/stdout of one inetd-style container run.
 */
export type ProbeTransport = { endpoint: Endpoint } | { stdio(request: Buffer): Promise<Buffer> };

/**
 * The one probe client of trace, self-check and verify: sends `probe`'s request over `via` and
 * returns its one response (for HTTP, with the status).
 */
export async function askProbe(
  probe: Probe,
  via: ProbeTransport,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<ProbeResponse> {
  if (probe.type === 'gopher') {
    const request = gopherRequest(probe.selector);
    return {
      body:
        'endpoint' in via ? await exchange(via.endpoint, request, opts) : await via.stdio(request),
    };
  }
  if (!('endpoint' in via)) {
    throw new UserError(
      `probe '${probe.name}' is an ${probe.type} probe, but the service is inetd-style (service.inetd: true) and speaks only on stdin/stdout: use gopher probes, or service.listen`,
    );
  }
  return httpGet(via.endpoint, probe.path, opts);
}
