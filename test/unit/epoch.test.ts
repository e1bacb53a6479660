import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../src/core/logger.js';
import { resolveEpoch } from '../../src/stages/epoch.js';

let repo: string;
const COMMIT_TIME = 1_650_000_000;

function git(...args: string[]): void {
  execFileSync('git', args, {
    cwd: repo,
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 't',
      GIT_AUTHOR_EMAIL: 't@example.invalid',
      GIT_COMMITTER_NAME: 't',
      GIT_COMMITTER_EMAIL: 't@example.invalid',
      GIT_AUTHOR_DATE: `@${COMMIT_TIME - 100} +0000`,
      GIT_COMMITTER_DATE: `@${COMMIT_TIME} +0000`,
    },
    stdio: 'ignore',
  });
}

beforeAll(async () => {
  repo = await mkdtemp(path.join(os.tmpdir(), 'lhc-epoch-'));
  git('init', '-q');
  await writeFile(path.join(repo, 'lhc.yml'), 'name: x\n');
  await writeFile(path.join(repo, 'untracked.yml'), 'name: y\n');
  git('add', 'lhc.yml');
  git('commit', '-q', '-m', 'config');
});
afterAll(async () => {
  await rm(repo, { recursive: true, force: true });
});

describe('resolveEpoch', () => {
  it('takes SOURCE_DATE_EPOCH first', async () => {
    expect(
      await resolveEpoch({
        env: { SOURCE_DATE_EPOCH: '1234' },
        configEpoch: 99,
        configFile: path.join(repo, 'lhc.yml'),
      }),
    ).toEqual({
      epoch: 1234,
      source: 'SOURCE_DATE_EPOCH',
    });
  });

  it('then the config epoch', async () => {
    expect(
      await resolveEpoch({ env: {}, configEpoch: 99, configFile: path.join(repo, 'lhc.yml') }),
    ).toEqual({ epoch: 99, source: 'config' });
  });

  it('then the commit time (committer date) of the config file', async () => {
    expect(await resolveEpoch({ env: {}, configFile: path.join(repo, 'lhc.yml') })).toEqual({
      epoch: COMMIT_TIME,
      source: 'git',
    });
  });

  it('falls back to 0 with a warning for a file git never saw', async () => {
    const logger = memoryLogger();
    expect(
      await resolveEpoch({ env: {}, configFile: path.join(repo, 'untracked.yml'), logger }),
    ).toEqual({ epoch: 0, source: 'default' });
    expect(logger.lines.join('\n')).toMatch(/file times are set to 0/);
  });

  it('rejects a malformed or out-of-range SOURCE_DATE_EPOCH by name', async () => {
    await expect(resolveEpoch({ env: { SOURCE_DATE_EPOCH: '2024-01-01' } })).rejects.toThrow(
      /SOURCE_DATE_EPOCH: expected whole seconds/,
    );
    await expect(resolveEpoch({ env: { SOURCE_DATE_EPOCH: '-5' } })).rejects.toThrow(
      /SOURCE_DATE_EPOCH/,
    );
    await expect(resolveEpoch({ env: { SOURCE_DATE_EPOCH: '4294967296' } })).rejects.toThrow(
      /last time squashfs can store/,
    );
  });

  it('treats an empty SOURCE_DATE_EPOCH as unset', async () => {
    expect(await resolveEpoch({ env: { SOURCE_DATE_EPOCH: '' }, configEpoch: 7 })).toEqual({
      epoch: 7,
      source: 'config',
    });
  });
});
