/**
 * A throwaway non-root user with passwordless sudo, like the `runner` user of GitHub-hosted
 * runners, and a way to run commands as that user with a clean environment.
 * Needs root (useradd, /etc/sudoers.d) and the sudo package.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { hasTool, isRoot, run, type RunResult } from '../../src/tools/exec.js';

export interface RunnerUser {
  name: string;
  uid: number;
  gid: number;
  /** Home directory (a fresh temp dir owned by the user). */
  home: string;
  sudoersFile: string;
}

/** Fails with what to do when the host cannot make a runner-like user. */
export async function requireRunnerUserTools(): Promise<void> {
  if (!isRoot()) throw new Error('this test creates a user with useradd: run it as root');
  for (const [tool, pkg] of [
    ['sudo', 'sudo'],
    ['useradd', 'passwd'],
    ['setpriv', 'util-linux'],
    ['visudo', 'sudo'],
  ] as const) {
    if (!(await hasTool(tool))) throw new Error(`'${tool}' is missing: apt-get install ${pkg}`);
  }
}

export async function createRunnerUser(): Promise<RunnerUser> {
  await requireRunnerUserTools();
  const name = `lhcrun${randomBytes(4).toString('hex')}`;
  // A home outside /home keeps the machine clean and is removed with the user.
  const parent = await mkdtemp(path.join(os.tmpdir(), 'lhc-runner-'));
  await run(['chmod', '0755', parent]);
  const home = path.join(parent, name);
  await run([
    'useradd',
    '--create-home',
    '--home-dir',
    home,
    '--user-group',
    '--shell',
    '/bin/sh',
    name,
  ]);
  const uid = Number((await run(['id', '-u', name])).stdout.trim());
  const gid = Number((await run(['id', '-g', name])).stdout.trim());
  const sudoersFile = `/etc/sudoers.d/${name}`;
  await writeFile(sudoersFile, `${name} ALL=(ALL) NOPASSWD:ALL\n`, { mode: 0o440 });
  await run(['visudo', '-c', '-q', '-f', sudoersFile]);
  return { name, uid, gid, home, sudoersFile };
}

/** Removes the user, its sudoers entry and its home; safe to call on a half-made user. */
export async function removeRunnerUser(user: RunnerUser | undefined): Promise<void> {
  if (!user) return;
  await rm(user.sudoersFile, { force: true });
  // userdel refuses while a process of the user still runs: a leak the test must report.
  const del = await run(['userdel', user.name], { reject: false });
  await rm(path.dirname(user.home), { recursive: true, force: true });
  if (del.exitCode !== 0)
    throw new Error(`could not remove user ${user.name}: ${del.stderr.trim()}`);
  if (existsSync(user.sudoersFile)) throw new Error(`could not remove ${user.sudoersFile}`);
}

/**
 * Runs argv as the user with exactly `env` (plus nothing inherited), like a runner starting a
 * step. Never throws on a non-zero exit; the caller checks exitCode.
 */
export async function runAs(
  user: RunnerUser,
  argv: readonly string[],
  opts: { env: Record<string, string>; cwd: string; timeoutMs?: number },
): Promise<RunResult> {
  const pairs = Object.entries(opts.env).map(([k, v]) => `${k}=${v}`);
  return run(
    [
      'setpriv',
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      '--init-groups',
      '--',
      'env',
      '-i',
      ...pairs,
      ...argv,
    ],
    { cwd: opts.cwd, reject: false, timeoutMs: opts.timeoutMs ?? 60_000 },
  );
}
