/**
 * The board's user namespace: one fixed range per service (not nspawn's -U), inside the range
 * systemd documents as unused and clear of nspawn's own pool, the same for verify and the unit.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  USERNS_BASE_MIN,
  USERNS_SIZE,
  USERNS_SLOTS,
  boardNspawnArgv,
  userNamespaceBase,
} from '../../src/tools/nspawn.js';

/** nspawn 252's PICK pool (CONTAINER_UID_BASE_MIN/MAX in src/nspawn/nspawn.c). */
const PICK_MIN = 0x00080000;
const PICK_MAX = 0x6fff0000;
/** systemd 257's foreign-uid range starts here; lhc's ranges must end before it. */
const FOREIGN_UID_BASE = 0x7ffe0000;

const board = (service: string) =>
  boardNspawnArgv({
    service,
    root: '/r',
    dataDir: '/d',
    dataPath: '/data',
    command: ['/bin/lua', '/bin/gophermoon'],
  });

describe('userNamespaceBase', () => {
  it('is a 65536-aligned range above the PICK pool that ends below the foreign-uid range', () => {
    for (const name of ['gophermoon', 'nginx', 'a', 'x'.repeat(64), 'redis-7']) {
      const base = userNamespaceBase(name);
      expect(base % USERNS_SIZE).toBe(0);
      expect(base).toBeGreaterThan(PICK_MAX + USERNS_SIZE - 1);
      expect(base).toBeGreaterThanOrEqual(PICK_MIN);
      expect(base + USERNS_SIZE).toBeLessThanOrEqual(FOREIGN_UID_BASE);
    }
    // The last slot too, whatever name lands there.
    expect(USERNS_BASE_MIN + USERNS_SLOTS * USERNS_SIZE).toBeLessThanOrEqual(FOREIGN_UID_BASE);
  });

  it('is derived from the name alone: stable across builds, different per service', () => {
    const h = createHash('sha256').update('gophermoon').digest().readUInt32BE(0);
    expect(userNamespaceBase('gophermoon')).toBe(
      USERNS_BASE_MIN + (h % USERNS_SLOTS) * USERNS_SIZE,
    );
    expect(userNamespaceBase('gophermoon')).toBe(userNamespaceBase('gophermoon'));
    const bases = new Set(
      ['gophermoon', 'nginx', 'redis', 'lighttpd', 'pygopherd'].map(userNamespaceBase),
    );
    expect(bases.size).toBe(5);
  });
});

describe('boardNspawnArgv user namespace', () => {
  it('asks for the fixed range with mapped ownership, never -U, and idmaps the data bind', () => {
    const argv = board('gophermoon');
    const base = userNamespaceBase('gophermoon');
    expect(argv).toContain(`--private-users=${base}:65536`);
    expect(argv).toContain('--private-users-ownership=map');
    expect(argv).not.toContain('-U');
    expect(argv.filter((a) => a.startsWith('--private-users='))).toHaveLength(1);
    expect(argv).toContain('--bind=/d:/data:idmap');
    expect(argv).toContain('--settings=no');
    expect(argv.indexOf('--settings=no')).toBeLessThan(argv.indexOf('--'));
  });

  it('gives two services two ranges', () => {
    const range = (a: string[]) => a.find((f) => f.startsWith('--private-users='));
    expect(range(board('gophermoon'))).not.toBe(range(board('nginx')));
  });
});
