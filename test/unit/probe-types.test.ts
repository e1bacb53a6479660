import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { tcpSendBytes } from '../../src/config/schema.js';
import { ConfigError, UserError } from '../../src/core/errors.js';
import { exchange, probeRequest } from '../../src/harness/client.js';
import { FORWARDER, forwarderReady } from '../../src/harness/service.js';
import { httpGetRequest, parseHttpResponse } from '../../src/harness/http-wire.js';

/** A service and its probes; line numbers matter below (probes start at line 6). */
function config(service: string, probes: string): string {
  return `name: probes
service:
  command: [/bin/server]
${service}
probes:
${probes}`;
}
const INETD = '  inetd: true';
const LISTEN = '  listen: 6379';

function rejected(text: string): string {
  try {
    parseConfig(text);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  throw new Error('expected the config to be rejected');
}

describe('tcp probes in lhc.yml', () => {
  it('reads send as bytes, with YAML escapes, and applies the defaults', () => {
    const raw = parseConfig(
      config(LISTEN, '  - { name: ping, type: tcp, send: "PING\\r\\n\\x00\\xff", fixture: f }\n'),
    );
    const p = raw.probes[0]!;
    expect(p.type).toBe('tcp');
    if (p.type !== 'tcp') return;
    expect([...tcpSendBytes(p)]).toEqual([...Buffer.from('PING\r\n'), 0x00, 0xff]);
    expect(p['half-close']).toBe(true);
    expect(p['idle-timeout']).toBe(2);
    expect(probeRequest(p)).toEqual(tcpSendBytes(p));
  });

  it('requires send and fixture, naming the field and line', () => {
    expect(rejected(config(LISTEN, '  - name: ping\n    type: tcp\n    fixture: f\n'))).toBe(
      'probes[0].send: required (lhc.yml:6)',
    );
    expect(rejected(config(LISTEN, '  - name: ping\n    type: tcp\n    send: "x"\n'))).toBe(
      'probes[0].fixture: required (lhc.yml:6)',
    );
  });

  it('refuses characters that are not bytes and an empty send', () => {
    expect(
      rejected(config(LISTEN, '  - name: ping\n    type: tcp\n    send: "é€"\n    fixture: f\n')),
    ).toBe(
      'probes[0].send: character U+20AC is not a byte: write each byte as "\\xNN" in a double-quoted string (lhc.yml:8)',
    );
    expect(
      rejected(config(LISTEN, '  - name: ping\n    type: tcp\n    send: ""\n    fixture: f\n')),
    ).toBe('probes[0].send: send at least one byte (lhc.yml:8)');
  });

  it('refuses half-close: false on an inetd service, whose stdin always ends', () => {
    const probe =
      '  - name: ping\n    type: tcp\n    send: "x"\n    fixture: f\n    half-close: false\n';
    expect(rejected(config(INETD, probe))).toMatch(
      /^probes\[0\]\.half-close: an inetd service reads the request from its stdin.*needs service\.listen \(lhc\.yml:10\)$/,
    );
    expect(parseConfig(config(LISTEN, probe)).probes[0]).toMatchObject({ 'half-close': false });
  });

  it('refuses an idle-timeout not shorter than service.timeout', () => {
    const probe =
      '  - name: ping\n    type: tcp\n    send: "x"\n    fixture: f\n    idle-timeout: 5\n';
    expect(rejected(config(`${LISTEN}\n  timeout: 5`, probe))).toBe(
      'probes[0].idle-timeout: idle-timeout (5 s) must be shorter than service.timeout (5 s) (lhc.yml:11)',
    );
  });
});

describe('http probes that cannot work', () => {
  it('refuses an http path with a space or a newline, and accepts http on inetd', () => {
    expect(rejected(config(INETD, '  - name: a\n    type: http\n    path: "/a b"\n'))).toBe(
      'probes[0].path: a request path is printable ASCII without spaces (percent-encode the rest) (lhc.yml:8)',
    );
    expect(
      parseConfig(config(INETD, '  - name: a\n    type: http\n    path: /x\n')).probes[0],
    ).toMatchObject({ type: 'http', path: '/x', status: 200 });
  });
});

describe('HTTP on a byte stream (inetd http probes)', () => {
  it('writes a GET that asks the server to close', () => {
    expect(httpGetRequest('/a?b=1').toString('latin1')).toBe(
      'GET /a?b=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
    );
  });

  it('parses status, headers and a body cut at Content-Length', () => {
    const raw = Buffer.from(
      'HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello trailing',
    );
    const r = parseHttpResponse(raw, 'probe');
    expect(r.status).toBe(404);
    expect(r.headers).toEqual({
      'content-type': 'text/html',
      'content-length': '5',
      'x-a': '1, 2',
    });
    expect(r.body.toString()).toBe('hello');
  });

  it('reads to the end without Content-Length, de-chunks, and skips 100 Continue', () => {
    expect(
      parseHttpResponse(Buffer.from('HTTP/1.0 200 OK\r\n\r\n\r\nbody\r\n'), 'p').body.toString(),
    ).toBe('\r\nbody\r\n');
    const chunked = Buffer.from(
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia!\r\n0\r\nX-T: 1\r\n\r\n',
    );
    const r = parseHttpResponse(chunked, 'p');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('Wikipedia!');
  });

  it('names the probe when stdout is not HTTP or is cut short', () => {
    expect(() => parseHttpResponse(Buffer.from('<html>hi</html>\n'), "probe 'x'")).toThrow(
      /^probe 'x': not an HTTP response \(no end of headers in 16 bytes\): "<html>hi<\/html>."$/,
    );
    expect(() => parseHttpResponse(Buffer.from('Hello\r\n\r\n'), "probe 'x'")).toThrow(
      'probe \'x\': not an HTTP status line: "Hello"',
    );
    const short = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
    expect(() => parseHttpResponse(short, "probe 'x'")).toThrow(UserError);
    expect(() => parseHttpResponse(short, "probe 'x'")).toThrow(
      "probe 'x': body has 3 bytes, Content-Length says 10",
    );
  });
});

describe('exchange(): when a tcp response ends', () => {
  const servers: net.Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });
  function serve(onConn: (c: net.Socket) => void): Promise<number> {
    const srv = net.createServer({ allowHalfOpen: true }, onConn);
    servers.push(srv);
    return new Promise((resolve) =>
      srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port)),
    );
  }

  it('half-closes, so a server that reads to EOF answers, and ends when it closes', async () => {
    const port = await serve((c) => {
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      c.on('end', () => c.end(Buffer.concat([Buffer.from('got:'), ...got])));
    });
    const body = await exchange({ host: '127.0.0.1', port }, Buffer.from('abc\r\n'), {
      timeoutMs: 5000,
      halfClose: true,
    });
    expect(body.toString()).toBe('got:abc\r\n');
  });

  it('ends after the idle limit when the server keeps the connection open', async () => {
    const port = await serve((c) => {
      c.on('data', () => {
        c.write('+PONG\r\n');
        setTimeout(() => c.write('$1\r\nx\r\n'), 50);
      });
    });
    const started = Date.now();
    const body = await exchange({ host: '127.0.0.1', port }, Buffer.from('PING\r\n'), {
      timeoutMs: 5000,
      halfClose: false,
      idleMs: 300,
    });
    expect(body.toString()).toBe('+PONG\r\n$1\r\nx\r\n');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('fails when no byte arrives before the timeout (the idle limit starts at the first byte)', async () => {
    const port = await serve(() => undefined);
    await expect(
      exchange({ host: '127.0.0.1', port }, Buffer.from('x'), {
        timeoutMs: 400,
        halfClose: true,
        idleMs: 100,
      }),
    ).rejects.toThrow(/no complete answer from 127\.0\.0\.1:\d+ within 400 ms/);
  });

  it('passes a half-close through the forwarder into a namespace and the answer back', async () => {
    const port = await serve((c) => {
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      c.on('end', () => c.end(Buffer.concat([Buffer.from('got:'), ...got])));
    });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-forwarder-'));
    const sock = path.join(dir, 'f.sock');
    const child = spawn(process.execPath, ['-e', FORWARDER, sock, String(port)], {
      stdio: 'ignore',
    });
    try {
      for (let i = 0; i < 100 && !forwarderReady(sock); i++)
        await new Promise((r) => setTimeout(r, 50));
      expect(forwarderReady(sock)).toBe(true);
      const body = await exchange({ path: sock }, Buffer.from('PING\r\n'), {
        timeoutMs: 5000,
        halfClose: true,
      });
      expect(body.toString()).toBe('got:PING\r\n');
    } finally {
      child.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
