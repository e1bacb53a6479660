import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { UserError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';
import { Store } from '../../src/store/store.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const content = randomBytes(300 * 1024);
const contentSha = sha(content);

/** A local HTTP server with one behaviour per path, counting requests. */
let server: http.Server;
let base: string;
const hits = new Map<string, number>();
let flaky = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    hits.set(url, (hits.get(url) ?? 0) + 1);
    if (url === '/ok.tar.gz') {
      res.writeHead(200, { 'content-length': content.length });
      res.end(content);
    } else if (url === '/slow.tar.gz') {
      res.writeHead(200, { 'content-length': content.length });
      let i = 0;
      const tick = setInterval(() => {
        res.write(content.subarray(i * 64 * 1024, (i + 1) * 64 * 1024));
        if (++i * 64 * 1024 >= content.length) {
          clearInterval(tick);
          res.end();
        }
      }, 30);
    } else if (url === '/truncated.tar.gz') {
      // Promises the whole file, then drops the connection half way.
      res.writeHead(200, { 'content-length': content.length });
      res.write(content.subarray(0, content.length / 2), () => res.destroy());
    } else if (url === '/flaky.tar.gz') {
      if (flaky++ === 0) {
        res.writeHead(503);
        res.end('busy');
      } else {
        res.writeHead(200);
        res.end(content);
      }
    } else {
      res.writeHead(404, 'Not Found');
      res.end('no such file');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

/** A port nothing listens on: bind, learn the number, release it. */
async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

let tmp: string;
let store: Store;
let log: ReturnType<typeof memoryLogger>;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-store-'));
  log = memoryLogger();
  store = new Store(path.join(tmp, 'store'), log);
  hits.clear();
  flaky = 0;
});
afterEach(async () => {
  // Every file in the store is named by the sha256 of its own content, whatever the test did.
  for (const f of await readdir(store.dir).catch(() => [] as string[])) {
    expect(sha(await readFile(path.join(store.dir, f))), f).toBe(f);
  }
  await rm(tmp, { recursive: true, force: true });
});

const listing = async () => (await readdir(store.dir).catch(() => [] as string[])).sort();

/** Seeds the store with one unrelated file so "unchanged" means more than "still empty". */
async function seed(): Promise<string[]> {
  const other = path.join(tmp, 'other.bin');
  await writeFile(other, 'already here\n');
  await store.add(other);
  return listing();
}

async function expectFailure(p: Promise<unknown>, ...patterns: RegExp[]): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  for (const re of patterns) expect(msg).toMatch(re);
  return msg;
}

describe('Store.add', () => {
  it('imports files named by their sha256 and returns it', async () => {
    const f = path.join(tmp, 'input.tar.gz');
    await writeFile(f, content);
    expect(await store.add(f)).toBe(contentSha);
    expect(await readFile(store.path(contentSha))).toEqual(content);
    expect(await store.has(contentSha)).toBe(true);
    expect(await store.list()).toEqual([contentSha]);
  });

  it('refuses a missing file with its name', async () => {
    await expectFailure(
      store.add(path.join(tmp, 'nope')),
      /cannot add .*nope to the store: ENOENT/,
    );
  });
});

describe('Store.fetch', () => {
  it('downloads over HTTP once, then serves from the store without network', async () => {
    const input = { urls: [`${base}/ok.tar.gz`], sha256: contentSha };
    const p = await store.fetch(input);
    expect(p).toBe(path.join(store.dir, contentSha));
    expect(await readFile(p)).toEqual(content);
    expect(hits.get('/ok.tar.gz')).toBe(1);
    expect(await store.fetch(input)).toBe(p);
    expect(hits.get('/ok.tar.gz')).toBe(1);
    // A present file needs no reachable URL at all.
    expect(
      await store.fetch({ urls: [`http://127.0.0.1:${await closedPort()}/x`], sha256: contentSha }),
    ).toBe(p);
  });

  it('reads file:// URLs', async () => {
    const f = path.join(tmp, 'local.tar.gz');
    await writeFile(f, content);
    expect(
      await readFile(await store.fetch({ urls: [pathToFileURL(f).href], sha256: contentSha })),
    ).toEqual(content);
  });

  it('reports progress for a slow download', async () => {
    await store.fetch(
      { urls: [`${base}/slow.tar.gz`], sha256: contentSha, name: 'slow' },
      { progressIntervalMs: 50 },
    );
    const progress = log.lines.filter((l) => /^slow: .* \/ 300\.0 KiB \(\d+%\)$/.test(l));
    expect(progress.length, log.lines.join('\n')).toBeGreaterThan(0);
    expect(log.lines.at(-1)).toMatch(/slow: 300\.0 KiB, sha256 verified/);
  });

  it('retries a transient failure (HTTP 503)', async () => {
    await store.fetch({ urls: [`${base}/flaky.tar.gz`], sha256: contentSha }, { retryDelayMs: 10 });
    expect(hits.get('/flaky.tar.gz')).toBe(2);
  });

  it('wrong sha256: names URL, expected and actual hash; store unchanged', async () => {
    const before = await seed();
    const wrong = sha(Buffer.from('something else'));
    const url = `${base}/ok.tar.gz`;
    await expectFailure(
      store.fetch({ urls: [url], sha256: wrong }),
      new RegExp(url.replaceAll('.', '\\.')),
      new RegExp(`expected ${wrong}`),
      new RegExp(`got ${contentSha}`),
    );
    expect(await listing()).toEqual(before);
    // Not retried: the same bytes would come back.
    expect(hits.get('/ok.tar.gz')).toBe(1);
  });

  it('truncated transfer (connection dropped): clear error, store unchanged', async () => {
    const before = await seed();
    await expectFailure(
      store.fetch(
        { urls: [`${base}/truncated.tar.gz`], sha256: contentSha },
        { retries: 1, retryDelayMs: 10 },
      ),
      /truncated\.tar\.gz: (transfer failed|short transfer)/,
    );
    expect(hits.get('/truncated.tar.gz')).toBe(2);
    expect(await listing()).toEqual(before);
  });

  it('truncated file (complete transfer of a short file): sha256 mismatch, store unchanged', async () => {
    const before = await seed();
    const f = path.join(tmp, 'short.tar.gz');
    const half = content.subarray(0, 1000);
    await writeFile(f, half);
    await expectFailure(
      store.fetch({ urls: [pathToFileURL(f).href], sha256: contentSha }),
      /short\.tar\.gz: sha256 mismatch/,
      new RegExp(`expected ${contentSha}, got ${sha(half)} \\(1000 bytes\\)`),
    );
    expect(await listing()).toEqual(before);
  });

  it('connection refused: names URL and reason, store unchanged', async () => {
    const before = await seed();
    const url = `http://127.0.0.1:${await closedPort()}/lua.tar.gz`;
    await expectFailure(
      store.fetch({ urls: [url], sha256: contentSha }, { retryDelayMs: 10 }),
      new RegExp(`${url.replaceAll('.', '\\.')}: connection refused \\(ECONNREFUSED\\)`),
    );
    expect(await listing()).toEqual(before);
  });

  it('HTTP 404: names URL and status, not retried, store unchanged', async () => {
    const before = await seed();
    await expectFailure(
      store.fetch({ urls: [`${base}/missing.tar.gz`], sha256: contentSha }),
      /missing\.tar\.gz: HTTP 404 Not Found/,
    );
    expect(hits.get('/missing.tar.gz')).toBe(1);
    expect(await listing()).toEqual(before);
  });

  it('tries URLs in order, and lists every failure when all fail', async () => {
    const refused = `http://127.0.0.1:${await closedPort()}/a.tar.gz`;
    const msg = await expectFailure(
      store.fetch(
        {
          urls: [refused, `${base}/missing.tar.gz`, 'ftp://example.invalid/x'],
          sha256: contentSha,
          name: 'lua',
        },
        { retries: 0 },
      ),
      /could not fetch lua \(sha256 [0-9a-f]{64}\) from any of 3 URLs/,
    );
    expect(msg.split('\n').slice(1)).toEqual([
      `  ${refused}: connection refused (ECONNREFUSED)`,
      `  ${base}/missing.tar.gz: HTTP 404 Not Found`,
      '  ftp://example.invalid/x: unsupported URL scheme ftp: (use http, https or file)',
    ]);
    // The next good URL wins after failures.
    await store.fetch({ urls: [refused, `${base}/ok.tar.gz`], sha256: contentSha }, { retries: 0 });
    expect(await store.has(contentSha)).toBe(true);
  });

  it('without URLs, a missing input says how to import it', async () => {
    await expectFailure(
      store.fetch({ urls: [], sha256: contentSha, name: 'lua-5.4.4.tar.gz' }),
      /lhc store add FILE/,
    );
  });

  it('rejects a malformed sha256', async () => {
    await expectFailure(
      store.fetch({ urls: [`${base}/ok.tar.gz`], sha256: 'ABC' }),
      /not a sha256/,
    );
    expect(hits.size).toBe(0);
  });

  it('a store file whose content does not match its name is detected, removed and replaced', async () => {
    await seed();
    await writeFile(path.join(store.dir, contentSha), 'bit rot');
    expect(await store.has(contentSha)).toBe(false);
    expect(log.lines.join('\n')).toMatch(
      new RegExp(
        `${contentSha} is corrupt \\(its content has sha256 ${sha(Buffer.from('bit rot'))}\\)`,
      ),
    );
    expect((await listing()).includes(contentSha)).toBe(false);

    await writeFile(path.join(store.dir, contentSha), 'bit rot again');
    const p = await store.fetch({ urls: [`${base}/ok.tar.gz`], sha256: contentSha });
    expect(await readFile(p)).toEqual(content);
    expect(hits.get('/ok.tar.gz')).toBe(1);
  });
});

describe('lhc fetch CONFIG', () => {
  it('brings the config inputs into $LHC_CACHE_DIR/store once, then offline', async () => {
    const saved = process.env.LHC_CACHE_DIR;
    process.env.LHC_CACHE_DIR = path.join(tmp, 'cli-cache');
    try {
      const cfg = path.join(tmp, 'lhc.yml');
      await writeFile(
        cfg,
        [
          'name: t',
          `lua: { version: "5.4.4", sha256: "${contentSha}", urls: ["${base}/ok.tar.gz"] }`,
          'service: { command: ["/bin/lua"], inetd: true }',
          'probes: [{ name: p, type: gopher, fixture: f }]',
          '',
        ].join('\n'),
      );
      const lines: string[] = [];
      expect(await main(['fetch', cfg], { out: (l) => lines.push(l), logger: log })).toBe(0);
      const stored = path.join(tmp, 'cli-cache', 'store', contentSha);
      expect(lines).toEqual([`${contentSha}  lua-5.4.4.tar.gz  ${stored}`]);
      expect(await readFile(stored)).toEqual(content);
      expect(await main(['fetch', cfg], { out: () => {}, logger: log })).toBe(0);
      expect(hits.get('/ok.tar.gz')).toBe(1);
    } finally {
      if (saved === undefined) delete process.env.LHC_CACHE_DIR;
      else process.env.LHC_CACHE_DIR = saved;
    }
  });
});
