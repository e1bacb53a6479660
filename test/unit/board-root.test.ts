/** A board root the user provides (`board: {tarball, sha256}`): checked before it is booted. */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { boardRootTarball } from '../../src/board/root.js';
import { parseConfig, resolveConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';

const CONFIG = `name: x
service: { command: [/bin/x], inetd: true }
probes: [{ name: a, type: http }]
`;

describe('board: {tarball, sha256}', () => {
  it('is used when its sha256 matches, refused naming the field when it does not', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-board-root-'));
    const tarball = path.join(dir, 'board.tar');
    await writeFile(tarball, 'not really a tar');
    const sha256 = createHash('sha256').update('not really a tar').digest('hex');
    const logger = memoryLogger();
    expect(await boardRootTarball({ logger, provided: { tarball, sha256 } })).toBe(tarball);
    await expect(
      boardRootTarball({ logger, provided: { tarball, sha256: '0'.repeat(64) } }),
    ).rejects.toThrow(/^board\.sha256: .* has sha256 [0-9a-f]{64}, expected 0{64}$/);
    await expect(
      boardRootTarball({ logger, provided: { tarball: `${tarball}.missing`, sha256 } }),
    ).rejects.toThrow(/^board\.tarball: .* is not a readable file$/);
    await rm(dir, { recursive: true });
  });

  it('is a config key whose tarball path is relative to the config file', () => {
    const raw = parseConfig(
      `${CONFIG}board: { tarball: roots/b.tar, sha256: ${'a'.repeat(64)} }\n`,
      'lhc.yml',
    );
    expect(resolveConfig(raw, '/cfg/lhc.yml').board).toEqual({
      tarball: '/cfg/roots/b.tar',
      sha256: 'a'.repeat(64),
    });
    expect(() =>
      parseConfig(`${CONFIG}board: { tarball: b.tar, sha256: nope }\n`, 'lhc.yml'),
    ).toThrow(/board\.sha256: expected 64 hex characters/);
  });
});
