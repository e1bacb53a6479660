/**
 * The lua stage for real: musl cross build and in-root build under QEMU, from the upstream
 * tarball (taken byte-identical from Debian's source package), seeded into a fresh store.
 * Every download URL points at a local server that counts requests: a build must make none.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { memoryLogger } from '../../src/core/logger.js';
import { storeDir } from '../../src/core/paths.js';
import { parseElf } from '../../src/elf/elf.js';
import { stageContext } from '../../src/core/stage.js';
import { buildLua, type LuaBuildResult, type LuaBuildSpec } from '../../src/stages/lua.js';
import { LuaVerifyError, verifyLua } from '../../src/stages/lua-verify.js';
import { sha256File, Store } from '../../src/store/store.js';
import { run } from '../../src/tools/exec.js';
import {
  debianDeb,
  extractDeb,
  luaSourceTarball,
  testCacheDir,
  type LuaTestVersion,
} from '../support/debian-inputs.js';

// Issue 16: the interpreter is copied into every image; at most 300 KB stripped.
const MAX_BYTES = 300_000;

let tmp: string;
let savedCacheDir: string | undefined;
let server: http.Server;
let base: string;
let requests = 0;
const log = memoryLogger();

beforeAll(async () => {
  for (const tool of ['aarch64-linux-gnu-gcc', 'aarch64-linux-gnu-strip', 'make']) {
    const r = await run(['sh', '-c', 'command -v "$1"', 'sh', tool], { reject: false });
    if (r.exitCode !== 0)
      throw new Error(
        `${tool} is missing: apt-get install gcc-aarch64-linux-gnu make musl-dev:arm64 (or lhc setup)`,
      );
  }
  if (!existsSync('/usr/lib/aarch64-linux-musl/musl-gcc.specs'))
    throw new Error('musl-dev:arm64 is missing: apt-get install musl-dev:arm64');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-lua-it-'));
  savedCacheDir = process.env.LHC_CACHE_DIR;
  process.env.LHC_CACHE_DIR = path.join(tmp, 'cache');
  server = http.createServer((_req, res) => {
    requests++;
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  if (savedCacheDir === undefined) delete process.env.LHC_CACHE_DIR;
  else process.env.LHC_CACHE_DIR = savedCacheDir;
  await new Promise((r) => server?.close(r));
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** Seeds the store through the CLI, as an offline user would: `lhc store add FILE`. */
async function seed(version: LuaTestVersion): Promise<string> {
  const src = await luaSourceTarball(version);
  const out: string[] = [];
  expect(await main(['store', 'add', src.path], { out: (l) => out.push(l), logger: log })).toBe(0);
  expect(out).toEqual([`${src.sha256}  ${src.path}`]);
  expect(await sha256File(path.join(storeDir(), src.sha256))).toBe(src.sha256);
  return src.sha256;
}

const store = () => new Store(storeDir(), log);
/** The lua stage with this file's store, build roots and no download retries. */
const build = (spec: LuaBuildSpec) =>
  buildLua(stageContext({ logger: log, store: store(), workDir: tmp }), {
    ...spec,
    buildrootDir: path.join(testCacheDir(), 'buildroots'),
    fetch: { retries: 0 },
  });

/** What must hold for every built interpreter, checked independently of the stage's own checks. */
async function expectStaticLua(r: LuaBuildResult, version: string): Promise<void> {
  const bytes = await readFile(r.path);
  const elf = parseElf(bytes);
  expect(elf).toMatchObject({ bits: 64, machineName: 'aarch64', needed: [], isStatic: true });
  expect(elf!.interp).toBeUndefined();
  expect(r.bytes).toBe(bytes.length);
  expect(r.bytes).toBeLessThanOrEqual(MAX_BYTES);
  expect(await sha256File(r.path)).toBe(r.sha256);
  // Exec'd directly: binfmt_misc hands it to qemu-aarch64.
  const v = await run([r.path, '-v']);
  expect(v.stdout).toMatch(new RegExp(`^Lua ${version.replaceAll('.', '\\.')}\\s`));
  const e = await run([
    r.path,
    '-e',
    'print(string.format("%d", #table.concat({"a","b"})), os.getenv("HOME") ~= nil)',
  ]);
  expect(e.stdout).toBe('2\ttrue\n');
}

describe('lua stage, cross strategy', () => {
  let cold: LuaBuildResult;

  it('cold build of 5.4.4: static aarch64, runs under QEMU, no download', async () => {
    const sha256 = await seed('5.4.4');
    cold = await build({
      version: '5.4.4',
      sha256,
      urls: [`${base}/lua-5.4.4.tar.gz`],
      arch: 'aarch64',
      strategy: 'cross',
    });
    expect(cold.cached).toBe(false);
    await expectStaticLua(cold, '5.4.4');
    expect(requests).toBe(0);
  });

  it('warm build hits the cache: same binary, nothing rebuilt', async () => {
    const warm = await build({
      version: '5.4.4',
      sha256: (await luaSourceTarball('5.4.4')).sha256,
      urls: [`${base}/x`],
      arch: 'aarch64',
      strategy: 'cross',
    });
    expect(warm).toMatchObject({
      cached: true,
      sha256: cold.sha256,
      path: cold.path,
      key: cold.key,
      bytes: cold.bytes,
    });
    expect(requests).toBe(0);
  });

  it('lhc lua --out writes the cached interpreter', async () => {
    const out = path.join(tmp, 'out');
    const lines: string[] = [];
    const src = await luaSourceTarball('5.4.4');
    const code = await main(
      [
        'lua',
        '--version',
        '5.4.4',
        '--sha256',
        src.sha256,
        '--url',
        `${base}/a`,
        '--url',
        `${base}/b`,
        '--arch',
        'aarch64',
        '--out',
        out,
      ],
      { out: (l) => lines.push(l), logger: log },
    );
    expect(code).toBe(0);
    expect(await sha256File(path.join(out, 'lua'))).toBe(cold.sha256);
    expect((await stat(path.join(out, 'lua'))).mode & 0o111).not.toBe(0);
    expect(lines).toContain('cached   yes');
    expect(requests).toBe(0);
  });

  it('a source missing from the store is fetched from its URLs, and a failure names them', async () => {
    const src = await luaSourceTarball('5.3.6');
    await expect(
      build({
        version: '5.3.6',
        sha256: src.sha256,
        urls: [`${base}/lua-5.3.6.tar.gz`],
        arch: 'aarch64',
        strategy: 'cross',
      }),
    ).rejects.toThrow(/lua-5\.3\.6\.tar\.gz: HTTP 404/);
    expect(requests).toBe(1);
    requests = 0;
  });

  it('cold build of 5.3.6', async () => {
    const sha256 = await seed('5.3.6');
    const r = await build({
      version: '5.3.6',
      sha256,
      urls: [`${base}/lua-5.3.6.tar.gz`],
      arch: 'aarch64',
      strategy: 'cross',
    });
    expect(r.cached).toBe(false);
    await expectStaticLua(r, '5.3.6');
    expect(requests).toBe(0);
  });
});

describe('lua stage, x86_64 with the host musl', () => {
  it('cold build of 5.4.4 for x86_64 is static and runs natively', async () => {
    if (!existsSync('/usr/lib/x86_64-linux-musl/musl-gcc.specs'))
      throw new Error('musl-dev (amd64) is missing: apt-get install musl-tools');
    const sha256 = await seed('5.4.4');
    const r = await build({
      version: '5.4.4',
      sha256,
      urls: [`${base}/lua-5.4.4.tar.gz`],
      arch: 'x86_64',
      strategy: 'cross',
    });
    const elf = parseElf(await readFile(r.path));
    expect(elf).toMatchObject({ bits: 64, machineName: 'x86_64', needed: [], isStatic: true });
    expect((await run([r.path, '-v'])).stdout).toMatch(/^Lua 5\.4\.4\s/);
    expect(requests).toBe(0);
  });
});

describe('lua verification names the failed check', () => {
  it('a dynamic x86_64 binary fails the ELF checks', async () => {
    await expect(verifyLua('/bin/ls', { version: '5.4.4', arch: 'aarch64' })).rejects.toThrow(
      /not a static aarch64 executable: machine x86_64, expected aarch64; has PT_INTERP .*; has DT_NEEDED .*libc\.so\.6/,
    );
  });

  it('a static aarch64 binary that is not Lua fails the version check', async () => {
    const root = await extractDeb(
      await debianDeb('busybox-static:arm64'),
      path.join(tmp, 'busybox'),
    );
    const err = await verifyLua(path.join(root, 'bin/busybox'), {
      version: '5.4.4',
      arch: 'aarch64',
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LuaVerifyError);
    expect((err as Error).message).toMatch(/busybox -v: expected "Lua 5\.4\.4", got /);
  });
});

describe('lua stage, in-root strategy (build root under QEMU)', () => {
  it('cold build of 5.4.4 with the target toolchain', async () => {
    for (const tool of ['mmdebstrap', 'systemd-nspawn']) {
      const r = await run(['sh', '-c', 'command -v "$1"', 'sh', tool], { reject: false });
      if (r.exitCode !== 0)
        throw new Error(
          `${tool} is missing: apt-get install mmdebstrap systemd-container (or lhc setup)`,
        );
    }
    const sha256 = await seed('5.4.4');
    const r = await build({
      version: '5.4.4',
      sha256,
      urls: [`${base}/lua-5.4.4.tar.gz`],
      arch: 'aarch64',
      strategy: 'in-root',
    });
    expect(r.cached).toBe(false);
    expect(r.strategy).toBe('in-root');
    await expectStaticLua(r, '5.4.4');
    expect(requests).toBe(0);
    const again = await build({ version: '5.4.4', sha256, arch: 'aarch64', strategy: 'in-root' });
    expect(again).toMatchObject({ cached: true, sha256: r.sha256 });
    // A fresh machine first makes the build root with mmdebstrap under QEMU (minutes).
  }, 1_800_000);
});
