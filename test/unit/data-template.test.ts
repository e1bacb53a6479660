import { execFileSync } from 'node:child_process';
import {
  chmod,
  cp,
  link,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UserError } from '../../src/core/errors.js';
import { listTar, tarDirectory, writeDataTemplate } from '../../src/stages/data-template.js';

const EPOCH = 1_700_000_000;
let tmp: string;

/** A data dir with the cases that break naive tar: sticky 1777, unsorted creation, hardlink, relative symlink. */
async function makeDataDir(dir: string): Promise<void> {
  await mkdir(path.join(dir, 'zeta'), { recursive: true });
  await mkdir(path.join(dir, 'tmp'));
  await chmod(path.join(dir, 'tmp'), 0o1777);
  await mkdir(path.join(dir, 'alpha', 'inner'), { recursive: true });
  await chmod(path.join(dir, 'alpha', 'inner'), 0o750);
  await writeFile(path.join(dir, 'zeta', 'z.txt'), 'zzz\n');
  await writeFile(path.join(dir, 'alpha', 'a.txt'), 'aaaa\n');
  await chmod(path.join(dir, 'alpha', 'a.txt'), 0o600);
  await link(path.join(dir, 'alpha', 'a.txt'), path.join(dir, 'alpha', 'hard.txt'));
  await symlink('../alpha/a.txt', path.join(dir, 'zeta', 'rel-link'));
  await chmod(dir, 0o755);
}

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-data-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('data template tar', () => {
  it('has sorted entries, one mtime, numeric ids without names, and modes kept exactly (1777 stays 1777)', async () => {
    const dir = path.join(tmp, 'd');
    await makeDataDir(dir);
    const list = await listTar(await tarDirectory(dir, EPOCH));
    expect(list.map((e) => e.path)).toEqual([
      './',
      'alpha/',
      'alpha/a.txt',
      'alpha/hard.txt',
      'alpha/inner/',
      'tmp/',
      'zeta/',
      'zeta/rel-link',
      'zeta/z.txt',
    ]);
    const byPath = new Map(list.map((e) => [e.path, e]));
    expect(byPath.get('tmp/')!.mode).toBe(0o1777);
    expect(byPath.get('alpha/inner/')!.mode).toBe(0o750);
    expect(byPath.get('alpha/a.txt')!.mode).toBe(0o600);
    // A hard link is stored as a second plain file, so the archive does not depend on how the tree was copied.
    expect(byPath.get('alpha/hard.txt')!.type).toBe('File');
    expect(byPath.get('alpha/hard.txt')!.sha256).toBe(byPath.get('alpha/a.txt')!.sha256);
    expect(byPath.get('zeta/rel-link')!.linkpath).toBe('../alpha/a.txt');
    for (const e of list) {
      expect(e.mtime, e.path).toBe(EPOCH);
      expect([e.uid, e.gid, e.uname, e.gname], e.path).toEqual([0, 0, '', '']);
    }
  });

  it('reads back the same with GNU tar', async () => {
    const dir = path.join(tmp, 'd');
    await makeDataDir(dir);
    const out = path.join(tmp, 't.tar.gz');
    await writeDataTemplate({ dataDir: dir, dataPath: '/data', epoch: EPOCH, out });
    const lines = execFileSync('tar', ['--numeric-owner', '--full-time', '-tvzf', out], {
      env: { ...process.env, TZ: 'UTC' },
    })
      .toString()
      .trim()
      .split('\n');
    const tmpLine = lines.find((l) => l.endsWith(' tmp/'))!;
    expect(tmpLine).toMatch(/^drwxrwxrwt 0\/0 +0 2023-11-14 22:13:20 tmp\/$/);
    expect(lines.map((l) => l.split(/\s+/).slice(5).join(' '))).toEqual([
      './',
      'alpha/',
      'alpha/a.txt',
      'alpha/hard.txt',
      'alpha/inner/',
      'tmp/',
      'zeta/',
      'zeta/rel-link -> ../alpha/a.txt',
      'zeta/z.txt',
    ]);
  });

  it('is byte-identical for a copy with other file times, another umask and the builder as owner', async () => {
    const a = path.join(tmp, 'a');
    await makeDataDir(a);
    const b = path.join(tmp, 'b');
    const old = process.umask(0o077);
    try {
      await cp(a, b, { recursive: true, preserveTimestamps: false, verbatimSymlinks: true });
    } finally {
      process.umask(old);
    }
    // cp keeps modes; move every time instead.
    for (const f of ['alpha/a.txt', 'zeta/z.txt', 'tmp', '.'])
      await utimes(path.join(b, f), 1_000_000, 2_000_000);
    const oa = path.join(tmp, 'a.tar.gz');
    const ob = path.join(tmp, 'b.tar.gz');
    const ra = await writeDataTemplate({ dataDir: a, dataPath: '/data', epoch: EPOCH, out: oa });
    const rb = await writeDataTemplate({ dataDir: b, dataPath: '/data', epoch: EPOCH, out: ob });
    expect(rb.sha256).toBe(ra.sha256);
    expect(Buffer.compare(await readFile(oa), await readFile(ob))).toBe(0);
    expect(rb.entries).toEqual(ra.entries);
  });

  it('has a fixed gzip header: no name, mtime 0, Unix OS byte', async () => {
    const dir = path.join(tmp, 'd');
    await makeDataDir(dir);
    const out = path.join(tmp, 't.tar.gz');
    await writeDataTemplate({ dataDir: dir, dataPath: '/data', epoch: EPOCH, out });
    const head = (await readFile(out)).subarray(0, 10);
    // magic 1f8b, deflate 08, flags 00 (no FNAME), mtime 0, XFL 02 (best compression), OS 03 (Unix)
    expect(head.toString('hex')).toBe('1f8b0800000000000203');
  });

  it('gives manifest entries at the container path, with the data root itself', async () => {
    const dir = path.join(tmp, 'd');
    await makeDataDir(dir);
    const r = await writeDataTemplate({
      dataDir: dir,
      dataPath: '/srv/data',
      epoch: EPOCH,
      out: path.join(tmp, 'x.tar.gz'),
    });
    expect(r.entries[0]).toEqual({ path: '/srv/data', type: 'dir', mode: '0755', uid: 0, gid: 0 });
    expect(r.entries.find((e) => e.path === '/srv/data/tmp')!.mode).toBe('1777');
    expect(r.entries.find((e) => e.path === '/srv/data/alpha/a.txt')).toMatchObject({
      size: 5,
      mode: '0600',
    });
  });

  it("gives the top directory to the service's ids and keeps every entry it carries root's", async () => {
    const dir = path.join(tmp, 'd');
    await makeDataDir(dir);
    const redis = { uid: 100, gid: 101 };
    const write = (out: string) =>
      writeDataTemplate({ dataDir: dir, dataPath: '/data', epoch: EPOCH, out, topOwner: redis });
    const r = await write(path.join(tmp, 'u1.tar.gz'));
    const lines = execFileSync('tar', ['--numeric-owner', '-tvzf', path.join(tmp, 'u1.tar.gz')])
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/));
    const owners = new Map(lines.map((f) => [f[5], f[1]]));
    expect(owners.get('./')).toBe('100/101');
    for (const [p, o] of owners) if (p !== './') expect(o, p).toBe('0/0');
    expect(r.entries[0]).toEqual({ path: '/data', type: 'dir', mode: '0755', uid: 100, gid: 101 });
    // The owner comes from the config, not the machine: the same ids give the same bytes.
    const again = await write(path.join(tmp, 'u2.tar.gz'));
    expect(again.sha256).toBe(r.sha256);
    const asRoot = await writeDataTemplate({
      dataDir: dir,
      dataPath: '/data',
      epoch: EPOCH,
      out: path.join(tmp, 'r.tar.gz'),
    });
    expect(asRoot.sha256).not.toBe(r.sha256);
  });

  it('gives an empty template to the service too', async () => {
    const r = await writeDataTemplate({
      dataPath: '/data',
      epoch: 0,
      out: path.join(tmp, 'e.tar.gz'),
      topOwner: { uid: 999, gid: 999 },
    });
    expect(r.entries).toEqual([{ path: '/data', type: 'dir', mode: '0755', uid: 999, gid: 999 }]);
  });

  it('writes an empty template when there is no data directory', async () => {
    const r = await writeDataTemplate({
      dataPath: '/data',
      epoch: 0,
      out: path.join(tmp, 'e.tar.gz'),
    });
    expect(r.entries).toEqual([{ path: '/data', type: 'dir', mode: '0755', uid: 0, gid: 0 }]);
  });

  it('refuses special files instead of silently dropping them', async () => {
    const dir = path.join(tmp, 'd');
    await mkdir(dir);
    execFileSync('mkfifo', [path.join(dir, 'pipe')]);
    const err = await tarDirectory(dir, EPOCH).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/only files, directories and symlinks.*'pipe'/);
  });

  it('refuses an absolute symlink and one climbing out of the template (the unpacking hosts would follow them)', async () => {
    const dir = path.join(tmp, 'd');
    await mkdir(path.join(dir, 'sub'), { recursive: true });
    await symlink('/data/x', path.join(dir, 'abs'));
    await symlink('../../etc/passwd', path.join(dir, 'sub', 'up'));
    await symlink('../x', path.join(dir, 'sub', 'fine'));
    const err = await tarDirectory(dir, EPOCH).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).toContain("'abs' is a symlink to the absolute path /data/x");
    expect(msg).toContain(
      "'sub/up' is a symlink to ../../etc/passwd, which points outside the template",
    );
    expect(msg).not.toContain('sub/fine');
  });
});
