/**
 * Hostile download sources, served from a local HTTP server on 127.0.0.1: a download is bounded
 * in size (announced or actually sent) and in total time, whatever the server does, and the
 * store's failure message says what really happened to the store.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig, resolveConfig } from '../../src/config/load.js';
import { UserError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';
import { configInputs } from '../../src/stages/fetch.js';
import { Store } from '../../src/store/store.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const content = randomBytes(64 * 1024);
const contentSha = sha(content);

let server: http.Server;
let base: string;
/** Bytes each path actually sent, to prove a refused download stopped early. */
const sent = new Map<string, number>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const count = (n: number) => sent.set(url, (sent.get(url) ?? 0) + n);
    if (url === '/ok') {
      res.writeHead(200, { 'content-length': content.length });
      res.end(content);
      count(content.length);
    } else if (url === '/announces-huge') {
      // Claims 1 TiB; sends only a little before the client should hang up.
      res.writeHead(200, { 'content-length': String(1024 ** 4) });
      res.write(Buffer.alloc(1024));
      count(1024);
    } else if (url === '/endless') {
      // No Content-Length: streams zeros until the client goes away.
      res.writeHead(200);
      const chunk = Buffer.alloc(16 * 1024);
      const pump = () => {
        while (!res.destroyed) {
          const more = res.write(chunk);
          count(chunk.length);
          if (!more) return res.once('drain', pump);
        }
      };
      pump();
    } else if (url === '/trickle') {
      // One byte per interval: never idle long enough for the idle timeout.
      res.writeHead(200, { 'content-length': String(content.length) });
      const tick = setInterval(() => {
        if (res.destroyed) return clearInterval(tick);
        res.write(content.subarray(0, 1));
        count(1);
      }, 100);
      res.on('close', () => clearInterval(tick));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

let tmp: string;
let store: Store;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-dl-limits-'));
  store = new Store(path.join(tmp, 'store'), memoryLogger());
  sent.clear();
});
afterEach(async () => {
  // Nothing left behind: no temp file of an abandoned download, no partial content.
  expect(await readdir(store.dir).catch(() => [])).toEqual([]);
  await rm(tmp, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserError);
  return (err as Error).message;
}

describe('download limits', () => {
  it('refuses a Content-Length above the cap before reading the body, without retrying', async () => {
    const msg = await failure(
      store.fetch(
        { urls: [`${base}/announces-huge`], sha256: contentSha, maxBytes: 1024 * 1024 },
        { retryDelayMs: 1 },
      ),
    );
    expect(msg).toMatch(/announces 1024\.0 GiB, more than the size cap of 1\.0 MiB/);
    expect(msg).toContain("raise the input's max-bytes");
    expect(msg).not.toContain('after 2 attempts');
  });

  it('stops a body without Content-Length at the cap (default cap, lowered per input)', async () => {
    const cap = 256 * 1024;
    const msg = await failure(
      store.fetch(
        { urls: [`${base}/endless`], sha256: contentSha, maxBytes: cap },
        { retryDelayMs: 1 },
      ),
    );
    expect(msg).toMatch(/sent more than the size cap of 256\.0 KiB \(262144 bytes\)/);
    // The server wrote a little past the cap into socket buffers, but nowhere near unbounded.
    expect(sent.get('/endless')!).toBeLessThan(64 * cap);
  });

  it('gives up on a server trickling a byte at a time when the deadline passes', async () => {
    const started = Date.now();
    const msg = await failure(
      store.fetch(
        { urls: [`${base}/trickle`], sha256: contentSha },
        { deadlineMs: 1_500, idleTimeoutMs: 10_000, retryDelayMs: 1 },
      ),
    );
    const seconds = (Date.now() - started) / 1000;
    expect(msg).toMatch(/not finished after 1\.5 s \(\d+ B received; deadline\)/);
    // One attempt only: a retry would take as long again.
    expect(seconds).toBeLessThan(4);
    expect(sent.get('/trickle')!).toBeGreaterThan(3);
  });

  it('a content under its cap still downloads', async () => {
    const p = await store.fetch({
      urls: [`${base}/ok`],
      sha256: contentSha,
      maxBytes: content.length,
    });
    expect(path.basename(p)).toBe(contentSha);
    await rm(p);
  });
});

describe('store messages tell what changed', () => {
  it('after removing a corrupt copy, a failed download says so (not "the store is unchanged")', async () => {
    await store.add(await writeTmp('seed', 'x')); // creates the store dir
    for (const f of await readdir(store.dir)) await rm(path.join(store.dir, f));
    await writeFile(path.join(store.dir, contentSha), 'bit rot');
    const msg = await failure(
      store.fetch({ urls: [`${base}/missing`], sha256: contentSha }, { retryDelayMs: 1 }),
    );
    expect(msg).not.toContain('unchanged');
    expect(msg).toContain(
      `the corrupt copy that was in the store was removed (${path.join(store.dir, contentSha)})`,
    );
  });

  it('when nothing was there, says nothing was added', async () => {
    const msg = await failure(
      store.fetch({ urls: [`${base}/missing`], sha256: contentSha }, { retryDelayMs: 1 }),
    );
    expect(msg).toContain('nothing was added to the store');
  });
});

describe('max-bytes in lhc.yml', () => {
  it('reaches the fetch inputs for Lua and the base tarball', () => {
    const raw = parseConfig(
      [
        'name: t',
        `lua: { version: "5.4.4", sha256: "${contentSha}", urls: ["${base}/ok"], max-bytes: 1000 }`,
        `base: { type: tarball, urls: ["${base}/ok"], sha256: "${contentSha}", max-bytes: 2000 }`,
        'service: { command: ["/bin/lua"], inetd: true }',
        'probes: [{ name: p, type: gopher, fixture: f }]',
      ].join('\n'),
    );
    const inputs = configInputs(resolveConfig(raw, '/project/lhc.yml'));
    expect(inputs.map((i) => i.maxBytes)).toEqual([1000, 2000]);
  });

  it('must be a positive whole number of bytes, named with its line', () => {
    expect(() =>
      parseConfig(
        [
          'name: t',
          `lua: { version: "5.4.4", sha256: "${contentSha}", max-bytes: -5 }`,
          'service: { command: ["/bin/lua"], inetd: true }',
          'probes: [{ name: p, type: gopher, fixture: f }]',
        ].join('\n'),
      ),
    ).toThrow(/^lua\.max-bytes: Too small: expected number to be >0 \(lhc\.yml:2\)$/);
  });
});

async function writeTmp(name: string, text: string): Promise<string> {
  const f = path.join(tmp, name);
  await writeFile(f, text);
  return f;
}
