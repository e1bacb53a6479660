/**
 * The one timestamp every packed file gets. Order: SOURCE_DATE_EPOCH (the reproducible-builds
 * convention, so distro and CI tooling can pin it), else the config's `epoch`, else the last git
 * commit that touched the config file, else 0 with a warning. 0 is as reproducible as any other
 * constant; refusing to build outside git would only punish first-time users.
 */
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { run } from '../tools/exec.js';

export type EpochSource = 'SOURCE_DATE_EPOCH' | 'config' | 'git' | 'default';

export interface Epoch {
  epoch: number;
  source: EpochSource;
}

/** squashfs stores times as unsigned 32-bit seconds. */
export const MAX_EPOCH = 0xffffffff;

export function parseEpoch(value: string, what: string): number {
  const text = value.trim();
  if (!/^\d+$/.test(text))
    throw new UserError(`${what}: expected whole seconds since 1970 (digits only), got "${value}"`);
  const n = Number(text);
  if (n > MAX_EPOCH)
    throw new UserError(`${what}: ${text} is past ${MAX_EPOCH}, the last time squashfs can store`);
  return n;
}

/** `git log -1 --format=%ct -- FILE` in the file's directory; undefined outside git or when never committed. */
export async function gitCommitTime(file: string, logger?: Logger): Promise<number | undefined> {
  const cwd = path.dirname(file);
  let r;
  try {
    r = await run(['git', 'log', '-1', '--format=%ct', '--', path.basename(file)], {
      cwd,
      reject: false,
      logger,
    });
  } catch (e) {
    if (e instanceof UserError) return undefined; // git is not installed
    throw e;
  }
  const text = r.stdout.trim();
  if (r.exitCode !== 0 || !/^\d+$/.test(text)) return undefined;
  // In a shallow clone the oldest fetched commit claims every file, so the answer depends on the clone depth.
  const shallow = await run(['git', 'rev-parse', '--is-shallow-repository'], {
    cwd,
    reject: false,
  });
  if (shallow.stdout.trim() === 'true') {
    logger?.warn(
      `${file}: the git clone is shallow, so its last commit time may not be the real one; ` +
        'set `epoch:` in the config, SOURCE_DATE_EPOCH, or clone with full history (fetch-depth: 0)',
    );
  }
  return Number(text);
}

export interface ResolveEpochInput {
  env?: NodeJS.ProcessEnv;
  configEpoch?: number;
  /** The config file, for the git fallback. */
  configFile?: string;
  logger?: Logger;
}

export async function resolveEpoch(input: ResolveEpochInput): Promise<Epoch> {
  const env = input.env ?? process.env;
  const fromEnv = env.SOURCE_DATE_EPOCH;
  if (fromEnv !== undefined && fromEnv !== '') {
    return { epoch: parseEpoch(fromEnv, 'SOURCE_DATE_EPOCH'), source: 'SOURCE_DATE_EPOCH' };
  }
  if (input.configEpoch !== undefined) {
    return { epoch: parseEpoch(String(input.configEpoch), 'epoch'), source: 'config' };
  }
  if (input.configFile) {
    const t = await gitCommitTime(input.configFile, input.logger);
    if (t !== undefined)
      return {
        epoch: parseEpoch(String(t), `git commit time of ${input.configFile}`),
        source: 'git',
      };
  }
  input.logger?.warn(
    'no SOURCE_DATE_EPOCH, no `epoch:` in the config and no git history for it: file times are set to 0 (1970-01-01)',
  );
  return { epoch: 0, source: 'default' };
}
