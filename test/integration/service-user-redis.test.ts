/**
 * A real Debian-packaged daemon as its own non-root user, writing into /data (issue 14): Debian's
 * redis-server as user `redis` on the Debian arm64 base the examples share (same base.packages,
 * so the cached base is reused). SAVE writes /data/dump.rdb synchronously and answers +OK only if
 * the write succeeded; with the data partition owned by root it answers an error instead. The
 * build must trace, self-check and verify with the payload running as redis's uid, and pack a
 * data template whose top directory belongs to that uid.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { readManifest } from '../../src/manifest/diff.js';
import { build } from '../../src/pipeline.js';
import { readRunAsFromImage } from '../../src/stages/service-user.js';
import { listTar } from '../../src/stages/data-template.js';
import { run } from '../../src/tools/exec.js';
import { seededBuildCache, testCacheDir } from '../support/debian-inputs.js';

/** The Debian examples' shared base (examples/{lighttpd,micro-httpd,pygopherd,redis}). */
const SHARED_DEBIAN_PACKAGES = ['lighttpd', 'micro-httpd', 'pygopherd', 'redis-server'];

/**
 * Not /etc/redis/redis.conf: Debian makes /etc/redis redis:redis 2770, and the image is packed
 * all-root, so user redis could not enter it on the booted image (the traced root still has the
 * package's owners: only verify would see it). RDB snapshots on demand only
 * (SAVE), no append-only file: the probe decides when /data is written.
 */
const REDIS_CONF = `bind 127.0.0.1
port 6379
daemonize no
supervised no
logfile ""
always-show-logo no
set-proc-title no
dir /data
save ""
appendonly no
dbfilename dump.rdb
`;

/** RESP arrays, as a client library sends them. */
function resp(...args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

const CONFIG = `name: redis-user
arch: aarch64
base:
  type: debian
  suite: bookworm
  packages: [${SHARED_DEBIAN_PACKAGES.join(', ')}]
files:
  - { src: redis.conf, dst: /etc/lhc-redis.conf, mode: "0644" }
data:
  path: /data
service:
  command: [/usr/bin/redis-server, /etc/lhc-redis.conf]
  user: redis
  listen: 6379
  timeout: 120
probes:
  - name: set-save-get
    type: tcp
    send: ${JSON.stringify(resp('SET', 'moon', 'full') + resp('SAVE') + resp('GET', 'moon'))}
    fixture: set-save-get.resp
outputs:
  dir: out
`;

describe('redis-server as user redis on the shared Debian base, writing /data', () => {
  let tmp: string;
  let r: BuildResult;
  /** redis's ids in the base's /etc/passwd (created by the package's postinst). */
  let redis: { uid: number; gid: number };

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-redis-user-'));
    writeFileSync(path.join(tmp, 'lhc.yml'), CONFIG);
    writeFileSync(path.join(tmp, 'redis.conf'), REDIS_CONF);
    // What RESP says the three commands answer when each succeeds: SET and SAVE +OK, GET the value.
    writeFileSync(path.join(tmp, 'set-save-get.resp'), '+OK\r\n+OK\r\n$4\r\nfull\r\n');
    execFileSync('git', ['init', '-q', tmp]);
    const { store, cacheDir } = await seededBuildCache();
    r = await build(await loadConfig(path.join(tmp, 'lhc.yml')), {
      outDir: path.join(tmp, 'out'),
      workDir: path.join(tmp, 'work'),
      keepWorkDir: true,
      force: true,
      logger: memoryLogger(),
      store,
      cacheDir,
      basesDir: path.join(testCacheDir(), 'bases'),
      requests: 10,
      env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
    });
    const passwd = readFileSync(path.join(tmp, 'work/root/etc/passwd'), 'utf8');
    // Read here with a plain split, not lhc's parser: the test checks what lhc resolved.
    const fields = passwd
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[0] === 'redis');
    if (!fields) throw new Error("the base's /etc/passwd has no redis user");
    redis = { uid: Number(fields[2]), gid: Number(fields[3]) };
  }, 2_400_000);

  afterAll(async () => {
    if (tmp) await run(['rm', '-rf', '--one-file-system', tmp], { privileged: true });
  });

  it('runs as a non-root user the base defines', () => {
    expect(redis.uid).toBeGreaterThan(0);
    expect(redis.gid).toBeGreaterThan(0);
  });

  it('verifies with the payload running as redis, and SAVE wrote /data', () => {
    const v = r.verify!;
    const row = v.hardening.find((h) => h.name.startsWith('payload runs as'));
    expect(row?.name).toBe(`payload runs as redis (uid ${redis.uid}, gid ${redis.gid})`);
    expect(row?.ok).toBe(true);
    // +OK from SAVE: redis wrote dump.rdb into /data as uid redis (root's /data gives an error).
    expect(v.probes.filter((p) => !p.ok)).toEqual([]);
    expect(v.probes.map((p) => p.name)).toContain('set-save-get');
    expect(v.hardening.filter((h) => !h.ok)).toEqual([]);
    expect(v.ok).toBe(true);
  });

  it("packs a data template whose top directory is redis's and whose entries are root's", async () => {
    const entries = await listTar(readFileSync(r.dataTemplate));
    expect(entries.find((e) => e.path === './')).toMatchObject(redis);
    for (const e of entries.filter((x) => x.path !== './'))
      expect([e.uid, e.gid], e.path).toEqual([0, 0]);
    const manifest = await readManifest(r.manifest);
    expect(manifest.data.entries[0]).toMatchObject({ path: '/data', ...redis });
  });

  it('carries the same ids in the image for the board', async () => {
    const config = await loadConfig(path.join(tmp, 'lhc.yml'));
    expect(await readRunAsFromImage(config, r.image)).toMatchObject({ name: 'redis', ...redis });
  });
});
