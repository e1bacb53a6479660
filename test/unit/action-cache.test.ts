import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cachePlan,
  cacheServiceAvailable,
  inputDigests,
  restoreCaches,
  saveCaches,
  type CacheBackend,
} from '../../src/action/cache.js';
import { parseConfig, resolveConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';

const LUA = '164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61';
const BASE = 'f'.repeat(64);

function config(extra = ''): LhcConfig {
  const text = `name: demo
${extra}
service:
  command: [/bin/lua, /bin/app]
  inetd: true
probes:
  - name: root
    type: gopher
    fixture: fixtures/root.txt
`;
  return resolveConfig(parseConfig(text), '/project/lhc.yml');
}

const withLua = `lua:\n  version: "5.4.4"\n  sha256: ${LUA}\n  urls: [https://www.lua.org/ftp/lua-5.4.4.tar.gz]`;
const withBase = `base:\n  type: tarball\n  urls: [https://example.invalid/root.tar.gz]\n  sha256: ${BASE}`;
const env = { LHC_CACHE_DIR: '/cache/lhc' };

describe('cachePlan', () => {
  it('keys the store by the sorted input digests and points at the store dir', () => {
    const both = cachePlan(config(`${withLua}\n${withBase}`), {
      env,
      platform: 'linux',
      arch: 'x64',
    });
    expect(inputDigests(config(`${withLua}\n${withBase}`))).toEqual([LUA, BASE].sort());
    expect(both.store!.path).toBe('/cache/lhc/store');
    expect(both.store!.key).toMatch(/^lhc-store-v1-linux-x64-[0-9a-f]{64}$/);
    // The declaration order of inputs does not matter, a changed digest does.
    expect(
      cachePlan(config(`${withBase}\n${withLua}`), { env, platform: 'linux', arch: 'x64' }).store!
        .key,
    ).toBe(both.store!.key);
    const onlyLua = cachePlan(config(withLua), { env, platform: 'linux', arch: 'x64' });
    expect(onlyLua.store!.key).not.toBe(both.store!.key);
    expect(
      cachePlan(config(withLua), { env, platform: 'linux', arch: 'arm64' }).store!.key,
    ).not.toBe(onlyLua.store!.key);
  });

  it('has no store or lua entry without remote inputs or lua', () => {
    const plan = cachePlan(config(), { env });
    expect(plan.store).toBeUndefined();
    expect(plan.lua).toBeUndefined();
  });

  it('carries the whole lua dir keyed by source, build settings and runner image', () => {
    const at = (extra: string, e: NodeJS.ProcessEnv = env) =>
      cachePlan(config(extra), { env: e, platform: 'linux', arch: 'x64' }).lua!;
    const lua = at(withLua);
    expect(lua.path).toBe('/cache/lhc/lua');
    expect(lua.key).toMatch(/^lhc-lua-v1-linux-x64-[0-9a-f]{64}$/);
    expect(at(withLua).key).toBe(lua.key);
    expect(at(`${withLua}\n  strategy: in-root`).key).not.toBe(lua.key);
    expect(at(withLua.replace('5.4.4', '5.4.6')).key).not.toBe(lua.key);
    expect(at(`${withLua}\narch: x86_64`).key).not.toBe(lua.key);
    expect(at(withLua, { ...env, ImageOS: 'ubuntu24', ImageVersion: '20250101.1' }).key).not.toBe(
      lua.key,
    );
  });

  it("carries only the stage's exact entry when its key is known", () => {
    const plan = cachePlan(config(withLua), {
      env,
      luaKey: 'abc123',
      platform: 'linux',
      arch: 'x64',
    });
    expect(plan.lua).toEqual({ key: 'lhc-lua-v1-linux-x64-abc123', path: '/cache/lhc/lua/abc123' });
  });

  it('carries the Debian bases keyed by suite, variant, sorted packages, arch and runner image', () => {
    const debian = (packages: string, e: NodeJS.ProcessEnv = env, arch = '') =>
      cachePlan(
        config(`base:\n  type: debian\n  suite: bookworm\n  packages: [${packages}]${arch}`),
        { env: e, platform: 'linux', arch: 'x64' },
      ).bases!;
    const b = debian('nginx-light, curl');
    expect(b.path).toBe('/cache/lhc/bases');
    expect(b.key).toMatch(/^lhc-bases-v1-linux-x64-[0-9a-f]{64}$/);
    expect(debian('curl, nginx-light').key).toBe(b.key);
    expect(debian('curl').key).not.toBe(b.key);
    expect(debian('nginx-light, curl', { ...env, ImageOS: 'ubuntu24' }).key).not.toBe(b.key);
    expect(cachePlan(config(withBase), { env }).bases).toBeUndefined();
  });

  it("carries the board root only when the board verify runs on lhc's own root", () => {
    expect(cachePlan(config(), { env }).board).toBeUndefined();
    const board = cachePlan(config(), { env, board: true, platform: 'linux', arch: 'x64' }).board!;
    expect(board.path).toBe('/cache/lhc/board');
    expect(board.key).toMatch(/^lhc-board-v1-linux-x64-[0-9a-f]{64}$/);
    const own = `board:\n  tarball: board.tar\n  sha256: ${BASE}`;
    expect(cachePlan(config(own), { env, board: true }).board).toBeUndefined();
  });

  it('keeps keys within what the cache service accepts', () => {
    const plan = cachePlan(config(withLua), { env, luaKey: 'k'.repeat(64) });
    for (const e of [plan.store!, plan.lua!]) {
      expect(e.key.length).toBeLessThanOrEqual(512);
      expect(e.key).not.toContain(',');
    }
  });
});

describe('cacheServiceAvailable', () => {
  it('needs the runtime token and the service URL of the protocol in use', () => {
    const keep = { ...process.env };
    try {
      for (const k of [
        'ACTIONS_RUNTIME_TOKEN',
        'ACTIONS_CACHE_URL',
        'ACTIONS_RESULTS_URL',
        'ACTIONS_CACHE_SERVICE_V2',
      ])
        delete process.env[k];
      expect(cacheServiceAvailable()).toBe(false);
      process.env.ACTIONS_RUNTIME_TOKEN = 't';
      expect(cacheServiceAvailable()).toBe(false);
      process.env.ACTIONS_CACHE_URL = 'http://127.0.0.1:1/';
      expect(cacheServiceAvailable()).toBe(true);
      process.env.ACTIONS_CACHE_SERVICE_V2 = 'true';
      expect(cacheServiceAvailable()).toBe(false);
      process.env.ACTIONS_RESULTS_URL = 'http://127.0.0.1:1/';
      expect(cacheServiceAvailable()).toBe(true);
      delete process.env.ACTIONS_RUNTIME_TOKEN;
      expect(cacheServiceAvailable()).toBe(false);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in keep)) delete process.env[k];
      Object.assign(process.env, keep);
    }
  });
});

/** A cache service stand-in that records calls and can be told to fail. */
function backend(
  opts: { available?: boolean; hit?: string[]; failRestore?: boolean; failSave?: boolean } = {},
) {
  const calls: string[] = [];
  const b: CacheBackend = {
    available: () => opts.available ?? true,
    async restore(paths, key) {
      calls.push(`restore ${key} ${paths.join(',')}`);
      if (opts.failRestore) throw new Error('connect ECONNREFUSED 127.0.0.1:1');
      return opts.hit?.includes(key) ? key : undefined;
    },
    async save(paths, key) {
      calls.push(`save ${key} ${paths.join(',')}`);
      if (opts.failSave) throw new Error('Unable to reserve cache');
      return 1;
    },
  };
  return { b, calls };
}

describe('restoreCaches / saveCaches', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-cache-'));
    await mkdir(path.join(dir, 'store'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const plan = () => ({
    store: { key: 'ks', path: path.join(dir, 'store') },
    lua: { key: 'kl', path: path.join(dir, 'lua-not-built') },
  });

  it('is skipped quietly without a cache service: a debug line, no call, no warning', async () => {
    const { b, calls } = backend({ available: false });
    const log = memoryLogger();
    const report = await restoreCaches(plan(), log, { backend: b });
    await saveCaches(report, log, { backend: b });
    expect(report.enabled).toBe(false);
    expect(calls).toEqual([]);
    expect(log.lines).toEqual([]);
  });

  it('is skipped when turned off by input', async () => {
    const { b, calls } = backend();
    const report = await restoreCaches(plan(), memoryLogger(), { backend: b, enabled: false });
    expect(report.enabled).toBe(false);
    expect(calls).toEqual([]);
  });

  it('saves misses that exist on disk and skips exact hits', async () => {
    const { b, calls } = backend({ hit: ['kl'] });
    const log = memoryLogger();
    const report = await restoreCaches(plan(), log, { backend: b });
    expect(report.store!.restored).toBeUndefined();
    expect(report.lua!.restored).toBe('kl');
    await saveCaches(report, log, { backend: b });
    expect(calls).toEqual([
      `restore ks ${dir}/store`,
      `restore kl ${dir}/lua-not-built`,
      `save ks ${dir}/store`,
    ]);
  });

  it('does not save a directory the build did not create', async () => {
    const { b, calls } = backend();
    const report = await restoreCaches(plan(), memoryLogger(), { backend: b });
    await saveCaches(report, memoryLogger(), { backend: b });
    expect(calls.filter((c) => c.startsWith('save'))).toEqual([`save ks ${dir}/store`]);
  });

  it('turns every failure into a warning and goes on', async () => {
    const { b } = backend({ failRestore: true, failSave: true });
    const log = memoryLogger();
    const report = await restoreCaches(plan(), log, { backend: b });
    await expect(saveCaches(report, log, { backend: b })).resolves.toBeUndefined();
    const warnings = log.lines.filter((l) => l.startsWith('warning: '));
    expect(warnings).toEqual([
      'warning: cache: could not restore store (ks): connect ECONNREFUSED 127.0.0.1:1; building without it',
      'warning: cache: could not restore lua (kl): connect ECONNREFUSED 127.0.0.1:1; building without it',
      'warning: cache: could not save store (ks): Unable to reserve cache',
    ]);
  });
});

/**
 * One save and one restore through the real @actions/cache (tar, Azure blob protocol, Twirp
 * calls of cache service v2) against a local stand-in for the service: the entry saved under a
 * key comes back byte for byte, and a key the service does not know is a quiet miss.
 */
describe('restoreCaches / saveCaches through @actions/cache', () => {
  let server: Server;
  let dir: string;
  const blobs = new Map<string, Buffer>();
  const staged = new Map<string, Buffer>();
  /** key → blob name, set by FinalizeCacheEntryUpload. */
  const entries = new Map<string, string>();
  const pending = new Map<string, string>();
  const twirp: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-cache-svc-'));
    server = createServer((req, res) => {
      void (async () => {
        const chunks: Buffer[] = [];
        for await (const c of req) chunks.push(c as Buffer);
        const data = Buffer.concat(chunks);
        const url = new URL(req.url!, 'http://127.0.0.1');
        const port = (server.address() as AddressInfo).port;
        const m = /^\/twirp\/github\.actions\.results\.api\.v1\.CacheService\/(\w+)$/.exec(
          url.pathname,
        );
        if (m) {
          const body = JSON.parse(data.toString('utf8')) as { key: string };
          twirp.push(`${m[1]} ${body.key}`);
          res.setHeader('content-type', 'application/json');
          if (m[1] === 'CreateCacheEntry') {
            const blob = `/devstoreaccount1/cache/${twirp.length}.tzst`;
            pending.set(body.key, blob);
            return res.end(
              JSON.stringify({
                ok: true,
                signedUploadUrl: `http://127.0.0.1:${port}${blob}?sig=s`,
              }),
            );
          }
          if (m[1] === 'FinalizeCacheEntryUpload') {
            entries.set(body.key, pending.get(body.key)!);
            return res.end(JSON.stringify({ ok: true, entryId: String(entries.size) }));
          }
          if (m[1] === 'GetCacheEntryDownloadURL') {
            const blob = entries.get(body.key);
            if (!blob) return res.end(JSON.stringify({ ok: false }));
            return res.end(
              JSON.stringify({
                ok: true,
                signedDownloadUrl: `http://127.0.0.1:${port}${blob}?sig=s`,
                matchedKey: body.key,
              }),
            );
          }
          res.statusCode = 404;
          return res.end('{"msg":"unknown method"}');
        }
        const blob = url.pathname;
        const headers = {
          etag: '"0x1"',
          'last-modified': new Date(0).toUTCString(),
          'x-ms-request-id': 'r',
        };
        if (req.method === 'PUT') {
          if (url.searchParams.get('comp') === 'block')
            staged.set(url.searchParams.get('blockid')!, data);
          else if (url.searchParams.get('comp') === 'blocklist') {
            const ids = [
              ...data.toString('utf8').matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]+)</g),
            ].map((b) => b[1]!);
            blobs.set(blob, Buffer.concat(ids.map((id) => staged.get(id)!)));
          } else blobs.set(blob, data);
          res.writeHead(201, headers);
          return res.end();
        }
        const content = blobs.get(blob);
        if (!content) {
          res.writeHead(404, headers);
          return res.end();
        }
        if (req.method === 'HEAD') {
          res.writeHead(200, {
            ...headers,
            'content-length': content.length,
            'x-ms-blob-type': 'BlockBlob',
          });
          return res.end();
        }
        const range = /bytes=(\d+)-(\d*)/.exec(
          String(req.headers['x-ms-range'] ?? req.headers.range ?? ''),
        );
        const start = range ? Number(range[1]) : 0;
        const end =
          range && range[2] ? Math.min(Number(range[2]), content.length - 1) : content.length - 1;
        const part = content.subarray(start, end + 1);
        res.writeHead(range ? 206 : 200, {
          ...headers,
          'content-length': part.length,
          ...(range ? { 'content-range': `bytes ${start}-${end}/${content.length}` } : {}),
        });
        res.end(part);
      })();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('saves the store and restores it byte for byte; an unknown key is a quiet miss', async () => {
    const store = path.join(dir, 'cache', 'store');
    await mkdir(store, { recursive: true });
    const files = { [LUA]: randomBytes(200_000), [BASE]: Buffer.from('base rootfs bytes') };
    for (const [name, bytes] of Object.entries(files))
      await writeFile(path.join(store, name), bytes);
    const plan = {
      store: { key: `lhc-test-store-${randomBytes(4).toString('hex')}`, path: store },
    };

    const keep = { ...process.env };
    const port = (server.address() as AddressInfo).port;
    Object.assign(process.env, {
      ACTIONS_CACHE_SERVICE_V2: 'true',
      ACTIONS_RESULTS_URL: `http://127.0.0.1:${port}/`,
      ACTIONS_RUNTIME_TOKEN: 'token',
      GITHUB_WORKSPACE: dir,
      RUNNER_TEMP: dir,
    });
    const write = process.stdout.write.bind(process.stdout);
    const stdout: string[] = [];
    process.stdout.write = ((c: string) => (
      stdout.push(String(c)),
      true
    )) as typeof process.stdout.write;
    const log = memoryLogger();
    try {
      const first = await restoreCaches(plan, log);
      expect(first).toMatchObject({
        enabled: true,
        store: { key: plan.store.key, restored: undefined },
      });
      await saveCaches(first, log);
      await rm(store, { recursive: true });
      const second = await restoreCaches(plan, log);
      expect(second.store!.restored).toBe(plan.store.key);
      // An exact hit is not saved again.
      await saveCaches(second, log);
    } finally {
      process.stdout.write = write;
      for (const k of Object.keys(process.env)) if (!(k in keep)) delete process.env[k];
      Object.assign(process.env, keep);
    }
    expect(twirp).toEqual([
      `GetCacheEntryDownloadURL ${plan.store.key}`,
      `CreateCacheEntry ${plan.store.key}`,
      `FinalizeCacheEntryUpload ${plan.store.key}`,
      `GetCacheEntryDownloadURL ${plan.store.key}`,
    ]);
    for (const [name, bytes] of Object.entries(files)) {
      expect((await readFile(path.join(store, name))).equals(bytes), `restored ${name}`).toBe(true);
    }
    expect(log.lines.filter((l) => l.startsWith('warning'))).toEqual([]);
    expect(stdout.join('')).not.toMatch(/^::(warning|error)::/m);
  });
});
