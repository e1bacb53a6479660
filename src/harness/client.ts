/**
 * Talking to the booted service over a real socket: TCP on the host for socket-activated
 * services, or a Unix socket that a forwarder inside the container's network namespace bridges
 * to the service's port (the container has no network but `lo`).
 */
import http from 'node:http';
import net from 'node:net';
import { tcpSendBytes, type Probe } from '../config/schema.js';
import { httpGetRequest, parseHttpResponse } from './http-wire.js';

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

/** The bytes a probe puts on the wire (or on an inetd service's stdin). */
export function probeRequest(probe: Probe): Buffer {
  if (probe.type === 'gopher') return gopherRequest(probe.selector);
  if (probe.type === 'http') return httpGetRequest(probe.path);
  return tcpSendBytes(probe);
}

/** How an exchange ends besides the peer closing. */
export interface ExchangeEnd {
  /** Shut down our write side after sending, so a server reading to EOF answers (tcp probes). */
  halfClose?: boolean;
  /** Once the first byte has arrived, stop after this long without another (servers that keep the connection open). */
  idleMs?: number;
}

/**
 * Sends `request` and reads until the peer closes (Gopher servers answer after the CRLF and
 * close), or until `idleMs` passes without a byte once the answer has begun. Rejects on a
 * connection error, on timeout (no complete answer) and on abort, always destroying the socket.
 */
export function exchange(
  e: Endpoint,
  request: Buffer,
  opts: { timeoutMs: number; signal?: AbortSignal } & ExchangeEnd,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = connect(e);
    let settled = false;
    let idle: NodeJS.Timeout | undefined;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(idle);
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
    sock.on('connect', () => (opts.halfClose ? sock.end(request) : sock.write(request)));
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.idleMs === undefined) return;
      clearTimeout(idle);
      idle = setTimeout(() => finish(), opts.idleMs);
    });
    sock.on('end', () => finish());
    sock.on('error', (err) => finish(err));
  });
}

/** No complete answer within the time (stdioExchange). */
export class ExchangeTimeout extends Error {}

/**
 * An inetd exchange over a connection, as the service's stdin and stdout would carry it: the
 * request and then end of input (a half-close, as stdin's EOF), and everything until the service
 * side closes (every process holding the connection is gone, as for stdout's EOF). A reset ends
 * it too: the kernel resets instead of closing when the service exits without reading all of
 * its input, which over stdin would have gone unnoticed; what it wrote before has arrived first.
 */
export function stdioExchange(
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
          new ExchangeTimeout(
            `no complete answer from ${describeEndpoint(e)} within ${opts.timeoutMs} ms`,
          ),
        ),
      opts.timeoutMs,
    );
    const onAbort = () => finish(new Error('aborted'));
    if (opts.signal?.aborted) return finish(new Error('aborted'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    sock.on('connect', () => sock.end(request));
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => finish());
    sock.on('error', (err: NodeJS.ErrnoException) =>
      err.code === 'ECONNRESET' || err.code === 'EPIPE' ? finish() : finish(err),
    );
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
 * returns its one response (for HTTP, with the status). Over stdio an HTTP answer is parsed from
 * the bytes the service wrote; status and body are what runs are compared by (headers carry
 * dates and versions).
 */
export async function askProbe(
  probe: Probe,
  via: ProbeTransport,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<ProbeResponse> {
  if (!('endpoint' in via)) {
    const raw = await via.stdio(probeRequest(probe));
    if (probe.type !== 'http') return { body: raw };
    const { status, body } = parseHttpResponse(
      raw,
      `probe '${probe.name}' (stdout of the service)`,
    );
    return { status, body };
  }
  if (probe.type === 'gopher')
    return { body: await exchange(via.endpoint, gopherRequest(probe.selector), opts) };
  if (probe.type === 'tcp')
    return {
      body: await exchange(via.endpoint, tcpSendBytes(probe), {
        ...opts,
        halfClose: probe['half-close'],
        idleMs: probe['idle-timeout'] * 1000,
      }),
    };
  return httpGet(via.endpoint, probe.path, opts);
}
