/**
 * HTTP/1.1 on a byte stream, for inetd HTTP servers: the traced run and the self-check write the
 * request on the container's stdin and read the whole answer from its stdout (there is no socket
 * and no HTTP client in between). The request is the one verify's client sends over TCP, so the
 * same server answers both the same way.
 */
import { UserError } from '../core/errors.js';
import type { ProbeResponse } from './client.js';

/** A GET asking the server to close after answering (what verify's client sends too). */
export function httpGetRequest(urlPath: string): Buffer {
  return Buffer.from(
    `GET ${urlPath} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
    'latin1',
  );
}

export interface HttpResponse extends Required<ProbeResponse> {
  /** Header names in lower case; a repeated header keeps its values joined by ", ". */
  headers: Record<string, string>;
}

function decodeChunked(raw: Buffer, what: string): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = raw.indexOf('\r\n', at, 'latin1');
    if (eol === -1) throw new UserError(`${what}: chunked body ends inside a chunk size line`);
    const sizeText = raw.subarray(at, eol).toString('latin1').split(';')[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText))
      throw new UserError(`${what}: bad chunk size "${sizeText}" at byte ${at}`);
    const size = parseInt(sizeText, 16);
    at = eol + 2;
    // The last chunk; trailers, if any, are not part of the body.
    if (size === 0) return Buffer.concat(out);
    if (at + size > raw.length) throw new UserError(`${what}: chunked body is cut short`);
    out.push(raw.subarray(at, at + size));
    at += size + 2;
  }
}

/**
 * Splits a complete HTTP/1.x response into status, headers and body (de-chunked, cut at
 * Content-Length). Interim 1xx responses are skipped. `what` names the probe in errors.
 */
export function parseHttpResponse(raw: Buffer, what: string): HttpResponse {
  let rest = raw;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n', 0, 'latin1');
    if (end === -1) {
      const shown = rest
        .subarray(0, 60)
        .toString('latin1')
        .replace(/[^\x20-\x7e]/g, '.');
      throw new UserError(
        `${what}: not an HTTP response (no end of headers in ${rest.length} bytes): "${shown}"`,
      );
    }
    const head = rest.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/\d\.\d (\d{3})(?: .*)?$/.exec(head[0]!);
    if (!m) throw new UserError(`${what}: not an HTTP status line: "${head[0]!.slice(0, 80)}"`);
    const status = Number(m[1]);
    const body = rest.subarray(end + 4);
    if (status >= 100 && status < 200 && status !== 101) {
      rest = body;
      continue;
    }
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw new UserError(`${what}: bad header line "${line.slice(0, 80)}"`);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? ''))
      return { status, headers, body: decodeChunked(body, what) };
    const length = headers['content-length'];
    if (length !== undefined) {
      if (!/^\d+$/.test(length)) throw new UserError(`${what}: bad Content-Length "${length}"`);
      const n = Number(length);
      if (body.length < n)
        throw new UserError(`${what}: body has ${body.length} bytes, Content-Length says ${n}`);
      return { status, headers, body: body.subarray(0, n) };
    }
    return { status, headers, body };
  }
}
