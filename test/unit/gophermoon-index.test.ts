/**
 * The content index is gophermoon's whole defence against symlinks (plain Lua cannot lstat):
 * the server opens only indexed paths. So the index must never list a symlink or anything
 * reached through one, and the committed index must match the committed content.
 */
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildIndex, INDEX_NAME, itemType } from '../../examples/gophermoon/make-index.js';
import { GOPHERMOON_CONTENT } from '../support/gopher.js';

describe('gophermoon content index', () => {
  it('the committed content/.index is what make-index.ts writes for the committed content', async () => {
    const fresh = await buildIndex(GOPHERMOON_CONTENT);
    expect(fresh.skipped).toEqual([]);
    const committed = await readFile(path.join(GOPHERMOON_CONTENT, INDEX_NAME), 'utf8');
    expect(committed, 'stale index: run npx tsx examples/gophermoon/make-index.ts').toBe(
      fresh.text,
    );
  });

  it('maps extensions to item types and sniffs files without one', () => {
    expect(itemType('a.txt', Buffer.from('x'))).toBe('0');
    expect(itemType('a.PNG', Buffer.from('x'))).toBe('I');
    expect(itemType('a.gif', Buffer.from('x'))).toBe('g');
    expect(itemType('a.html', Buffer.from('x'))).toBe('h');
    expect(itemType('a.tar.gz', Buffer.from('x'))).toBe('9');
    expect(itemType('README', Buffer.from('plain text\n'))).toBe('0');
    expect(itemType('README', Buffer.from([0x41, 0x00]))).toBe('9');
    expect(itemType('blob', Buffer.from([0xff, 0xfe]))).toBe('9');
  });

  describe('in a scratch tree', () => {
    const GOPHERMAP = '0The docs\tdocs/b.txt\n1Remote\t/x\tother.host\t70\n';
    const A_TXT = '\n  First\t\tline of A  \n';
    let dir: string;
    let outside: string;
    beforeEach(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'gm-index-'));
      outside = await mkdtemp(path.join(os.tmpdir(), 'gm-outside-'));
      await writeFile(path.join(outside, 'secret.txt'), 'secret\n');
      await mkdir(path.join(dir, 'docs/deep'), { recursive: true });
      await writeFile(path.join(dir, 'gophermap'), GOPHERMAP);
      await writeFile(path.join(dir, 'docs/b.txt'), 'Heading B\n');
      await writeFile(path.join(dir, 'docs/a.txt'), A_TXT);
      await writeFile(path.join(dir, 'docs/deep/pic.png'), Buffer.from([0x89, 0x50]));
      await writeFile(path.join(dir, '.hidden'), 'x');
      await writeFile(path.join(dir, INDEX_NAME), 'an old index, not content\n');
      await writeFile(path.join(dir, '100%.txt'), 'x');
      await writeFile(path.join(dir, 'tab\tname.txt'), 'x');
      await symlink(path.join(outside, 'secret.txt'), path.join(dir, 'docs/abs-link.txt'));
      await symlink('../../../../../../etc/passwd', path.join(dir, 'docs/rel-link.txt'));
      await symlink(outside, path.join(dir, 'outside-dir'));
      await symlink('docs', path.join(dir, 'inside-dir-link'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
      await rm(outside, { recursive: true, force: true });
    });

    it('lists real files and directories only, never a symlink or anything behind one', async () => {
      const idx = await buildIndex(dir);
      expect(idx.entries.map((e) => e.path)).toEqual([
        '/docs',
        '/docs/a.txt',
        '/docs/b.txt',
        '/docs/deep',
        '/docs/deep/pic.png',
        '/gophermap',
      ]);
      expect(idx.skipped.map((s) => `${s.path}: ${s.reason}`).sort()).toEqual([
        '/.hidden: hidden name',
        '/100%.txt: control character or "%" in name',
        '/docs/abs-link.txt: symlink (never followed)',
        '/docs/rel-link.txt: symlink (never followed)',
        '/inside-dir-link: symlink (never followed)',
        '/outside-dir: symlink (never followed)',
        '/tab\tname.txt: control character or "%" in name',
      ]);
      expect(idx.text).not.toContain('secret');
      expect(idx.text).not.toContain('link');
    });

    it('writes TYPE, PATH, SIZE and TITLE, titles from a gophermap, the first line, or the name', async () => {
      const lines = (await buildIndex(dir)).text.split('\n').filter((l) => l && !l.startsWith('#'));
      expect(lines).toEqual([
        '1\t/docs\t-\tdocs',
        `0\t/docs/a.txt\t${Buffer.byteLength(A_TXT)}\tFirst line of A`,
        '0\t/docs/b.txt\t10\tThe docs',
        '1\t/docs/deep\t-\tdeep',
        'I\t/docs/deep/pic.png\t2\tpic.png',
        `0\t/gophermap\t${Buffer.byteLength(GOPHERMAP)}\t`,
      ]);
    });
  });
});
