/**
 * Machine names for the containers lhc starts on the build host. nspawn keeps per-machine host
 * state under /run/systemd/nspawn (propagate/NAME; unix-export/NAME on newer systemd) and
 * removes it when a container exits, so concurrent builds must never share a name. Where /run is
 * not a tmpfs (hosts without systemd as PID 1), nspawn refuses to remove that directory
 * ("Attempted to remove disk file system"), so each run removes its own, by exact name, once
 * its containers are gone: one name per run, not per container, keeps that to one directory.
 */
import { readdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { containerIdentity } from '../tools/nspawn.js';
import { isRoot, run } from '../tools/exec.js';

export const NSPAWN_STATE_DIRS = [
  '/run/systemd/nspawn/propagate',
  '/run/systemd/nspawn/unix-export',
] as const;

export { containerIdentity };

/**
 * Removes nspawn's state directories of `machineName`, and of the per-connection names made from
 * it (`NAME-PID`, see perConnectionMachine), when they are empty (rmdir, never a recursive
 * delete: a directory still in use or holding anything is left alone).
 */
export async function releaseMachineName(
  machineName: string,
  stateDirs: readonly string[] = NSPAWN_STATE_DIRS,
): Promise<void> {
  if (!/^lhc-[A-Za-z0-9-]+$/.test(machineName)) return;
  const own = (n: string) =>
    n === machineName ||
    (n.startsWith(`${machineName}-`) && /^\d+$/.test(n.slice(machineName.length + 1)));
  for (const d of stateDirs) {
    const names = await readdir(d).catch(() => [] as string[]);
    const dirs = [...new Set([machineName, ...names.filter(own)])].map((n) => path.join(d, n));
    if (isRoot()) for (const dir of dirs) await rmdir(dir).catch(() => undefined);
    else
      await run(['rmdir', '--ignore-fail-on-non-empty', '--', ...dirs], {
        privileged: true,
        reject: false,
      });
  }
}
