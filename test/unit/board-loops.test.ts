/**
 * A board's teardown detaches only its own loop devices. Inside any board a backing file reads
 * `/var/lib/lhc/...`, so two boards at once look alike by path; the file's identity (inode and
 * file system device, as losetup reports them) tells them apart.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  backedByBoard,
  majorMinor,
  parseLoopList,
  type LoopDevice,
} from '../../src/board/machine.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lhc-board-loops-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function boardWithImage(name: string): { root: string; file: string } {
  const root = path.join(tmp, name, 'root');
  const file = path.join(root, 'var/lib/lhc/gophermoon/releases/1/gophermoon.squashfs');
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, name);
  return { root, file };
}

/** What losetup lists for a loop device over `file`, seen from inside a board. */
function loopOver(file: string, root: string, name = '/dev/loop7'): LoopDevice {
  const st = statSync(file);
  return {
    name,
    backingInode: String(st.ino),
    backingDevice: majorMinor(st.dev),
    backingFile: `/${path.relative(root, file)}`,
  };
}

describe('loop devices of a board', () => {
  it('parses losetup --raw output, keeping spaces in the file name', () => {
    expect(
      parseLoopList('/dev/loop0 2304116 254:0 /var/lib/lhc/a b.squashfs\n/dev/loop1 12 0:45 /x\n'),
    ).toEqual([
      {
        name: '/dev/loop0',
        backingInode: '2304116',
        backingDevice: '254:0',
        backingFile: '/var/lib/lhc/a b.squashfs',
      },
      { name: '/dev/loop1', backingInode: '12', backingDevice: '0:45', backingFile: '/x' },
    ]);
  });

  it('encodes a stat dev number as findmnt shows the file system', () => {
    const file = boardWithImage('enc').file;
    const shown = execFileSync('findmnt', ['-n', '-o', 'MAJ:MIN', '-T', file], {
      encoding: 'utf8',
    }).trim();
    expect(majorMinor(statSync(file).dev)).toBe(shown);
    expect(majorMinor(0x10300)).toBe('259:0');
    expect(majorMinor(0x00107)).toBe('1:7');
  });

  it("tells this board's loop from another board's at the same in-board path", () => {
    const a = boardWithImage('a');
    const b = boardWithImage('b');
    const loopA = loopOver(a.file, a.root, '/dev/loop7');
    const loopB = loopOver(b.file, b.root, '/dev/loop8');
    expect(loopA.backingFile).toBe(loopB.backingFile);
    expect(backedByBoard(loopA, a.root)).toBe(true);
    expect(backedByBoard(loopB, a.root)).toBe(false);
    expect(backedByBoard(loopB, b.root)).toBe(true);
  });

  it('counts a host path under the board root, and nothing else', () => {
    const a = boardWithImage('c');
    const host = { name: '/dev/loop9', backingInode: '1', backingDevice: '254:0' };
    expect(backedByBoard({ ...host, backingFile: a.file }, a.root)).toBe(true);
    expect(backedByBoard({ ...host, backingFile: `${a.root}-other/x` }, a.root)).toBe(false);
    expect(backedByBoard({ ...host, backingFile: '/var/lib/lhc/missing' }, a.root)).toBe(false);
  });
});
