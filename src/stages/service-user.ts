/**
 * service.user, between the root and the trace: resolved from the assembled (unpruned) root's
 * /etc/passwd and /etc/group, then lhc-run-as is installed at RUN_AS_PATH with those ids baked
 * in. Every container run (trace, self-check, verify, the board's units) starts the command
 * through it; prune keeps it (`service-user`), and later stages read the ids back from it.
 */
import { lstat, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import { parseConfigWithLines } from '../config/load.js';
import { ConfigError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StageContext } from '../core/stage.js';
import { installFile } from '../root/overlay.js';
import { ResolveError, resolveInRoot } from '../root/resolve.js';
import { isRootUser, resolveUser, type RunAs } from '../service-user/passwd.js';
import { readRunAsElf, RUN_AS_PATH, runAsElf } from '../service-user/run-as-elf.js';
import { run } from '../tools/exec.js';
import { ACCEPT_PATH, acceptElf, needsAcceptLoop } from '../accept/accept-elf.js';

/** A root's file, resolved inside the root; undefined when it is not a regular file there. */
async function readInRoot(root: string, p: string): Promise<Buffer | undefined> {
  let r;
  try {
    r = resolveInRoot(root, p);
  } catch (e) {
    // A missing or non-directory parent: the file is not there.
    if (e instanceof ResolveError && e.reason !== 'loop') return undefined;
    throw e;
  }
  if (!r.exists || !(await lstat(r.host)).isFile()) return undefined;
  return readFile(r.host);
}

/** `lhc.yml:LINE` of a config field, for errors found after loading. */
async function where(config: LhcConfig, at: (string | number)[]): Promise<string> {
  const name = path.basename(config.file);
  try {
    return parseConfigWithLines(await readFile(config.file, 'utf8'), name).where(at);
  } catch {
    return name;
  }
}

/** Resolves service.user in `root` and installs the helper there; undefined for root (nothing to drop). */
export async function installRunAs(
  ctx: StageContext,
  { config, root }: { config: LhcConfig; root: string },
): Promise<RunAs | undefined> {
  const { logger } = ctx;
  const user = config.service.user;
  if (isRootUser(user)) return undefined;
  const resolved = resolveUser(
    user,
    (await readInRoot(root, '/etc/passwd'))?.toString('utf8'),
    (await readInRoot(root, '/etc/group'))?.toString('utf8'),
  );
  if ('problem' in resolved)
    throw new ConfigError(
      `service.user: ${resolved.problem} (${await where(config, ['service', 'user'])})`,
    );
  const r = resolved.runAs;
  const staged = path.join(ctx.work.dir, 'lhc-run-as');
  await writeFile(staged, runAsElf(config.arch, r), { mode: 0o755 });
  await installFile(root, staged, RUN_AS_PATH, 0o755);
  logger.info(
    `service.user ${user}: uid ${r.uid}, gid ${r.gid}, groups ${r.groups.join(',')}, home ${r.home} (${RUN_AS_PATH})`,
  );
  return r;
}

/**
 * The connection loop of an inetd service under the systemd runtime, and the one-connection
 * payload of the nspawn runtime's warm containers (see accept/accept-elf.ts).
 */
export async function installAcceptLoop(
  ctx: StageContext,
  { config, root }: { config: LhcConfig; root: string },
): Promise<void> {
  if (!needsAcceptLoop(config)) return;
  const staged = path.join(ctx.work.dir, 'lhc-accept');
  await writeFile(staged, acceptElf(config.arch), { mode: 0o755 });
  await installFile(root, staged, ACCEPT_PATH, 0o755);
  ctx.logger.info(
    config.deploy.runtime === 'systemd'
      ? `deploy.runtime systemd: connections are accepted by ${ACCEPT_PATH}`
      : `deploy.warm-containers ${config.deploy['warm-containers']}: each warm container takes its connection with ${ACCEPT_PATH}`,
  );
}

/**
 * The ids an image's helper drops to, checked against service.user: verify and the deploy bundle
 * read them from the image, which has no /etc/passwd after pruning.
 */
export async function readRunAs(config: LhcConfig, root: string): Promise<RunAs | undefined> {
  const bytes = await readInRoot(root, RUN_AS_PATH);
  return checkRunAs(config, bytes ? readRunAsElf(bytes) : undefined);
}

/** The same from a packed image file, without mounting it (the board's verify). */
export async function readRunAsFromImage(
  config: LhcConfig,
  image: string,
  logger?: Logger,
): Promise<RunAs | undefined> {
  const r = await run(['unsquashfs', '-cat', image, RUN_AS_PATH], {
    binary: true,
    reject: false,
    ...(logger ? { logger } : {}),
  });
  return checkRunAs(config, r.exitCode === 0 ? readRunAsElf(r.stdoutBytes) : undefined);
}

function checkRunAs(config: LhcConfig, runAs: RunAs | undefined): RunAs | undefined {
  const user = config.service.user;
  if (isRootUser(user)) {
    if (runAs)
      throw new UserError(
        `the image drops to user ${runAs.name} (${RUN_AS_PATH}) but service.user is root: rebuild it with this config`,
      );
    return undefined;
  }
  if (!runAs)
    throw new UserError(
      `service.user is ${user}, but the image has no ${RUN_AS_PATH} to switch to it: rebuild the image with this config`,
    );
  const matches =
    typeof user === 'number' || /^\d+$/.test(user)
      ? runAs.uid === Number(user)
      : runAs.name === user;
  if (!matches)
    throw new UserError(
      `service.user is ${user}, but the image was built for ${runAs.name} (uid ${runAs.uid}): rebuild the image with this config`,
    );
  return runAs;
}
