/**
 * The privilege path of exec.ts as a runner meets it: the action's process is not root, so
 * privileged commands go through `sudo -n`, and when that cannot work the error must say why.
 * Commands run for real in a child process as a non-root user (nobody, when the test runs as root).
 */
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isRoot, withPrivilege } from '../../src/tools/exec.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const probe = path.join(repo, 'test/support/privileged-run.ts');
const NOBODY = 65534;

type Outcome =
  | { ok: true; exitCode: number; stdout: string; command: string }
  | { ok: false; error: string; message: string };

/** Runs argv through run() in a child process that is not root. */
function runAsNonRoot(
  argv: string[],
  opts: { privileged: boolean; path?: string },
): Promise<Outcome> {
  const env = { ...process.env, PATH: opts.path ?? process.env.PATH ?? '/usr/bin:/bin' };
  const ids = isRoot() ? { uid: NOBODY, gid: NOBODY } : {};
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', probe, JSON.stringify({ argv, privileged: opts.privileged })],
      { cwd: repo, env, ...ids, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`probe process failed: ${err.message}\n${stderr}`));
        resolve(JSON.parse(stdout) as Outcome);
      },
    );
  });
}

function sudoPath(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v sudo'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(
      'sudo is not installed: apt-get install sudo (needed to test the non-root privilege path)',
    );
  }
}

/** Whether the non-root user of these tests has passwordless sudo (nobody never has). */
function nonRootHasSudo(): boolean {
  if (isRoot()) return false;
  try {
    execFileSync('sudo', ['-n', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('withPrivilege', () => {
  it('prefixes sudo -n -- only for privileged commands of a non-root process', () => {
    expect(withPrivilege(['mount', '-o', 'loop', 'a', 'b'], true, false)).toEqual([
      'sudo',
      '-n',
      '--',
      'mount',
      '-o',
      'loop',
      'a',
      'b',
    ]);
    expect(withPrivilege(['mount'], true, true)).toEqual(['mount']);
    expect(withPrivilege(['ls'], false, false)).toEqual(['ls']);
  });
});

describe('run() as a non-root user', () => {
  it('runs unprivileged commands directly, as that user', async () => {
    const r = await runAsNonRoot(['id', '-u'], { privileged: false });
    expect(r).toMatchObject({ ok: true, exitCode: 0 });
    expect(Number((r as { stdout: string }).stdout.trim())).toBe(
      isRoot() ? NOBODY : process.getuid!(),
    );
  });

  it('reports missing passwordless sudo as a user error, or runs as root when sudo works', async () => {
    sudoPath();
    const r = await runAsNonRoot(['id', '-u'], { privileged: true });
    if (nonRootHasSudo()) {
      expect(r).toMatchObject({ ok: true, stdout: '0\n' });
      expect((r as { command: string }).command).toBe('sudo -n -- id -u');
    } else {
      expect(r).toEqual({
        ok: false,
        error: 'UserError',
        message:
          "'id' needs root and passwordless sudo is not available (sudo -n failed): run as root or configure passwordless sudo",
      });
    }
  });

  it('names sudo, not the command, when sudo itself is not installed', async () => {
    // A PATH without sudo on it stands for a host without the sudo package.
    const r = await runAsNonRoot(['mount'], { privileged: true, path: '/nonexistent' });
    expect(r.ok).toBe(false);
    const { error, message } = r as { error: string; message: string };
    expect(error).toBe('UserError');
    expect(message).toMatch(/\bsudo\b/);
    expect(message).toContain('apt-get install sudo');
    expect(message).toContain("'mount' needs root");
  });
});
