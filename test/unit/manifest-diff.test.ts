import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkManifestLock, diffManifests, formatDiff } from '../../src/manifest/diff.js';
import {
  parseManifest,
  serializeManifest,
  type Manifest,
  type ManifestEntry,
} from '../../src/manifest/manifest.js';

const H1 = 'a'.repeat(64);
const H2 = 'b'.repeat(64);

function manifest(image: ManifestEntry[], data: ManifestEntry[] = []): Manifest {
  return { lhcManifest: 1, name: 'demo', image, data: { path: '/data', entries: data } };
}

const dir = (p: string, mode = '0755'): ManifestEntry => ({
  path: p,
  type: 'dir',
  mode,
  uid: 0,
  gid: 0,
});
const file = (p: string, size: number, sha256 = H1, mode = '0644'): ManifestEntry => ({
  path: p,
  type: 'file',
  mode,
  uid: 0,
  gid: 0,
  size,
  sha256,
});

const base = manifest(
  [
    dir('/'),
    dir('/bin'),
    file('/bin/lua', 1000, H1, '0755'),
    { path: '/bin/sh', type: 'symlink', mode: '0777', uid: 0, gid: 0, target: '/bin/busybox' },
    file('/gopher/a.txt', 10),
  ],
  [dir('/data', '1777')],
);

describe('diffManifests / formatDiff', () => {
  it('reports identical manifests as equal', () => {
    const d = diffManifests(base, structuredClone(base));
    expect(d.equal).toBe(true);
    expect(formatDiff(d)).toBe('manifests are identical\n');
  });

  it('lists added, removed and changed paths with size and mode deltas, sorted, image before data', () => {
    const next = structuredClone(base);
    next.image = next.image.filter((e) => e.path !== '/bin/sh');
    next.image.push(file('/gopher/b.txt', 5));
    const lua = next.image.find((e) => e.path === '/bin/lua')!;
    lua.size = 1200;
    lua.sha256 = H2;
    lua.mode = '0700';
    next.data.entries[0]!.mode = '0755';
    const d = diffManifests(base, next);
    expect(d.equal).toBe(false);
    expect(d.added.map((a) => a.entry.path)).toEqual(['/gopher/b.txt']);
    expect(d.removed.map((a) => a.entry.path)).toEqual(['/bin/sh']);
    expect(d.changed.map((c) => [c.section, c.path, c.fields])).toEqual([
      ['image', '/bin/lua', ['mode', 'size', 'sha256']],
      ['data', '/data', ['mode']],
    ]);
    expect(formatDiff(d, { old: 'old.json', new: 'new.json' }).split('\n')).toEqual([
      '--- old.json',
      '+++ new.json',
      `~ image /bin/lua  mode 0755 → 0700, size 1000 → 1200 (+200), content ${H1.slice(0, 12)} → ${H2.slice(0, 12)}`,
      '- image /bin/sh  symlink 0777 0:0 -> /bin/busybox',
      '+ image /gopher/b.txt  file 0644 0:0 5 bytes',
      '~ data  /data  mode 1777 → 0755',
      '4 paths differ: 1 added, 1 removed, 2 changed',
      '',
    ]);
  });

  it('reports a shrinking file with a negative delta and a type change', () => {
    const next = structuredClone(base);
    next.image[4] = file('/gopher/a.txt', 7, H2);
    next.image[1] = {
      path: '/bin',
      type: 'symlink',
      mode: '0777',
      uid: 0,
      gid: 0,
      target: 'usr/bin',
    };
    const text = formatDiff(diffManifests(base, next));
    expect(text).toContain(
      `~ image /gopher/a.txt  size 10 → 7 (-3), content ${H1.slice(0, 12)} → ${H2.slice(0, 12)}`,
    );
    expect(text).toContain(
      '~ image /bin  type dir → symlink, mode 0755 → 0777, target - → usr/bin',
    );
  });
});

describe('serializeManifest / parseManifest', () => {
  it('writes one entry per line in path byte order with a fixed key order and reads it back', () => {
    const shuffled = manifest([
      file('/b', 1),
      dir('/'),
      {
        path: '/a',
        type: 'file',
        sha256: H1,
        size: 2,
        gid: 0,
        uid: 0,
        mode: '0600',
      } as ManifestEntry,
    ]);
    const text = serializeManifest(shuffled);
    const lines = text.split('\n');
    expect(lines[3]).toBe('  "image": [');
    expect(lines[4]).toBe('    {"path":"/","type":"dir","mode":"0755","uid":0,"gid":0},');
    expect(lines[5]).toBe(
      `    {"path":"/a","type":"file","mode":"0600","uid":0,"gid":0,"size":2,"sha256":"${H1}"},`,
    );
    expect(lines[6]).toBe(
      `    {"path":"/b","type":"file","mode":"0644","uid":0,"gid":0,"size":1,"sha256":"${H1}"}`,
    );
    const back = parseManifest(text, 'x.json');
    expect(serializeManifest(back)).toBe(text);
  });

  it('rejects what is not a manifest with the file name in the message', () => {
    expect(() => parseManifest('{', 'bad.json')).toThrow(/bad\.json: not valid JSON/);
    expect(() => parseManifest('{"a":1}', 'other.json')).toThrow(
      /other\.json: not an lhc manifest/,
    );
    expect(() =>
      parseManifest(
        '{"lhcManifest":1,"image":[{"path":"/"}],"data":{"path":"/data","entries":[]}}',
        'm.json',
      ),
    ).toThrow(/m\.json: entry 0 is not a valid manifest entry/);
  });
});

describe('checkManifestLock', () => {
  let tmp: string;
  beforeEach(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-lock-'));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('reports a missing lock as changed, and creates it only when asked', async () => {
    const lock = path.join(tmp, 'demo.lock.json');
    const missing = await checkManifestLock(base, lock, false);
    expect(missing).toMatchObject({ changed: true, updated: false });
    expect(missing.diffText).toMatch(/manifest lock .*demo\.lock\.json does not exist/);
    expect(existsSync(lock)).toBe(false);
    const r = await checkManifestLock(base, lock, true);
    expect(r).toMatchObject({ changed: true, updated: true });
    expect(await readFile(lock, 'utf8')).toBe(serializeManifest(base));
  });

  it('passes when equal, reports the diff when different, and rewrites only with update', async () => {
    const lock = path.join(tmp, 'demo.lock.json');
    await writeFile(lock, serializeManifest(base));
    expect(await checkManifestLock(base, lock, false)).toEqual({
      changed: false,
      updated: false,
      diffText: '',
    });

    const next = structuredClone(base);
    next.image.push(file('/new', 3));
    const differs = await checkManifestLock(next, lock, false);
    expect(differs).toMatchObject({ changed: true, updated: false });
    expect(differs.diffText).toContain('+ image /new  file 0644 0:0 3 bytes');
    expect(await readFile(lock, 'utf8')).toBe(serializeManifest(base));

    const r = await checkManifestLock(next, lock, true);
    expect(r).toMatchObject({ changed: true, updated: true });
    expect(r.diffText).toContain('+ image /new');
    expect(existsSync(lock)).toBe(true);
    expect(await readFile(lock, 'utf8')).toBe(serializeManifest(next));
  });
});
