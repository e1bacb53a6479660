/**
 * What verify sets up on the host and must take down on every path: the image loop-mounted
 * read-only, the data tmpfs (noexec,nosuid,nodev) seeded from the template, and any container
 * process still holding either. `--image=` would need udev, so the image is mounted by hand.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { isRoot, run } from '../tools/exec.js';
import { parseMountInfo } from '../verify/hardening.js';
import { processTable } from './proc.js';
import { sleep } from '../core/wait.js';

interface MountRow {
  majorMinor: string;
  mountPoint: string;
  source: string;
}

/** This process's mounts with their device numbers (the same namespace `mount` acts in). */
async function ownMounts(): Promise<MountRow[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const parsed = parseMountInfo(text);
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l, i) => ({
      majorMinor: l.split(' ')[2]!,
      mountPoint: parsed[i]!.mountPoint,
      source: parsed[i]!.source,
    }));
}

export async function mountAt(dir: string): Promise<MountRow | undefined> {
  return (await ownMounts()).filter((m) => m.mountPoint === dir).at(-1);
}

export interface ImageMount {
  dir: string;
  /** /dev/loopN the kernel picked, and its device number (as in mountinfo). */
  loopDevice: string;
  majorMinor: string;
}

/** `mount -o loop,ro`: util-linux sets LO_FLAGS_AUTOCLEAR, so the loop device goes with the mount. */
export async function mountImageReadOnly(
  image: string,
  dir: string,
  logger: Logger,
): Promise<ImageMount> {
  await run(['mount', '-t', 'squashfs', '-o', 'loop,ro', image, dir], {
    privileged: true,
    logger,
    timeoutMs: 60_000,
  });
  const m = await mountAt(dir);
  if (!m)
    throw new UserError(
      `mounting ${image} at ${dir} reported success but nothing is mounted there`,
    );
  return { dir, loopDevice: m.source, majorMinor: m.majorMinor };
}

export async function mountDataTmpfs(dir: string, logger: Logger, sizeMb = 256): Promise<string> {
  // Not root: own the tmpfs, so the template can be unpacked without privileges.
  const owner = isRoot() ? [] : [`uid=${process.getuid!()}`, `gid=${process.getgid!()}`];
  const opts = ['noexec', 'nosuid', 'nodev', 'mode=0755', `size=${sizeMb}m`, ...owner].join(',');
  // The source names the mount point, so a leftover is recognisable in any namespace's mountinfo.
  await run(['mount', '-t', 'tmpfs', '-o', opts, `lhc-verify:${dir}`, dir], {
    privileged: true,
    logger,
    timeoutMs: 30_000,
  });
  const m = await mountAt(dir);
  if (!m)
    throw new UserError(`mounting a tmpfs at ${dir} reported success but nothing is mounted there`);
  return m.majorMinor;
}

/**
 * Pids whose root directory is the mounted image (device `majorMinor` mounted at "/" in their
 * namespace): container payloads that outlived their nspawn, e.g. after nspawn was SIGKILLed.
 * Matching on the root mount only, so no host process that merely sees our mounts is touched.
 */
export async function containerProcesses(majorMinor: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of processTable().keys()) {
    if (pid === process.pid) continue;
    let text: string;
    try {
      text = await readFile(`/proc/${pid}/mountinfo`, 'utf8');
    } catch {
      continue;
    }
    if (
      text.split('\n').some((l) => {
        const f = l.split(' ');
        return f[2] === majorMinor && f[4] === '/';
      })
    ) {
      out.push(pid);
    }
  }
  return out;
}

export async function killPid(pid: number): Promise<void> {
  if (isRoot()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  } else {
    await run(['kill', '-KILL', String(pid)], { privileged: true, reject: false });
  }
}

/** umount, retried while busy, then detached lazily (-l) so the mount never outlives us. */
export async function unmount(dir: string, logger: Logger): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    if (!(await mountAt(dir))) return;
    const r = await run(['umount', dir], {
      privileged: true,
      logger,
      reject: false,
      timeoutMs: 30_000,
    });
    if (r.exitCode === 0) continue;
    logger.debug(`umount ${dir}: ${r.stderr.trim()}`);
    await sleep(200 * (attempt + 1));
  }
  if (await mountAt(dir)) {
    logger.warn(`${dir} is still busy; detaching it lazily (umount -l)`);
    await run(['umount', '-l', dir], { privileged: true, logger, timeoutMs: 30_000 });
  }
}

function loopName(dev: string): string | undefined {
  return /^\/dev\/(loop\d+)$/.exec(dev)?.[1];
}

/** The backing file of a loop device, or undefined when it is free. */
export async function loopBackingFile(dev: string): Promise<string | undefined> {
  const name = loopName(dev);
  if (!name) return undefined;
  try {
    return (await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/**
 * Autoclear frees the loop device once the last mount of it is gone; a lazily detached mount
 * can delay that. Wait briefly, then detach it ourselves if it still points at our image.
 */
export async function releaseLoop(dev: string, image: string, logger: Logger): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const backing = await loopBackingFile(dev);
    if (
      backing === undefined ||
      path.resolve(backing.replace(/ \(deleted\)$/, '')) !== path.resolve(image)
    )
      return;
    await sleep(100);
  }
  logger.warn(`${dev} was not auto-cleared; detaching it with losetup -d`);
  await run(['losetup', '-d', dev], { privileged: true, logger, reject: false });
}

/** Removes the work dir, but never while something is still mounted below it. */
export async function removeWorkDir(
  workDir: string,
  mountPoints: readonly string[],
): Promise<void> {
  for (const m of mountPoints) {
    if (await mountAt(m)) throw new Error(`${m} is still mounted; leaving ${workDir} in place`);
    if (existsSync(m)) await rmdir(m).catch(() => undefined);
  }
  if (
    existsSync(workDir) &&
    (await readdir(workDir)).every((n) => !mountPoints.includes(path.join(workDir, n)))
  ) {
    await rm(workDir, { recursive: true, force: true });
  }
}

/**
 * An overlay over `lower`: writable, instant, and `lower` stays untouched (a 200 MB Debian root
 * takes ~14 s to copy). False when the kernel or the filesystem refuses (e.g. overlay on
 * overlay in some containers); the caller then copies.
 */
export async function mountOverlay(
  lower: string,
  upper: string,
  work: string,
  target: string,
  logger: Logger,
): Promise<boolean> {
  const r = await run(
    [
      'mount',
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
      target,
    ],
    { privileged: true, reject: false, logger },
  );
  if (r.exitCode !== 0)
    logger.debug(`overlay mount failed, copying the root instead: ${r.stderr.trim()}`);
  return r.exitCode === 0;
}

/** `source` seen read-only at `target` (a bind mount, then remounted ro). */
export async function bindReadOnly(source: string, target: string, logger: Logger): Promise<void> {
  await run(['mount', '--bind', source, target], { privileged: true, logger });
  try {
    await run(['mount', '-o', 'remount,bind,ro', target], { privileged: true, logger });
  } catch (e) {
    await unmount(target, logger);
    throw e;
  }
}
