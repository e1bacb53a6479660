/**
 * The one privileged tree removal. Roots and work dirs hold files owned by other uids (nspawn,
 * mmdebstrap, QEMU), so plain fs.rm cannot remove them; `--one-file-system` keeps a mount that
 * is still attached below (a busy overlay, a loop-mounted image) from being emptied through it.
 */
import type { Logger } from '../core/logger.js';
import { run } from './exec.js';

export interface RemoveTreeOptions {
  logger?: Logger;
  /** Throw when rm fails (default). Cleanups pass false: they must not hide the first error. */
  reject?: boolean;
  timeoutMs?: number;
}

/** Removes `paths` with privilege; returns rm's stderr when it failed and `reject` is false. */
export async function removeTree(
  paths: readonly string[],
  o: RemoveTreeOptions = {},
): Promise<string | undefined> {
  if (paths.length === 0) return undefined;
  const r = await run(['rm', '-rf', '--one-file-system', '--', ...paths], {
    privileged: true,
    reject: o.reject ?? true,
    ...(o.logger ? { logger: o.logger } : {}),
    ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
  });
  if (r.exitCode === 0) return undefined;
  const why = r.stderr.trim() || `rm exit code ${r.exitCode}`;
  o.logger?.warn(`could not remove ${paths.join(' ')}: ${why}`);
  return why;
}
