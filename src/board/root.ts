/**
 * The simulated board's root filesystem: a Debian root with systemd as PID 1 and what a board
 * needs to run a deploy bundle (systemd-nspawn, loop mounts, ext4, squashfs), made by mmdebstrap
 * for the host's own architecture and cached by its package list; or a tarball the user
 * provides (`board: {tarball, sha256}`), checked against its sha256 before use.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { hostArch } from '../core/arch.js';
import { ConfigError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { cacheDir } from '../core/paths.js';
import { debianBaseTarball } from '../stages/root.js';
import { sha256File } from '../store/store.js';

/** What a board must have to install and run a bundle; curl lets a person probe from the board. */
export const BOARD_PACKAGES = [
  'curl',
  'dbus',
  'e2fsprogs',
  'squashfs-tools',
  'systemd',
  'systemd-container',
  'systemd-sysv',
] as const;

export const BOARD_SUITE = 'bookworm';

export interface BoardRootSource {
  tarball: string;
  sha256: string;
}

export interface BoardRootOptions {
  logger: Logger;
  signal?: AbortSignal;
  /** A board root the user provides instead of the mmdebstrap one. */
  provided?: BoardRootSource;
  /** Where built board roots are cached; default <lhc cache>/board. */
  cacheDir?: string;
}

/** Path of an uncompressed tarball holding the board's root. */
export async function boardRootTarball(o: BoardRootOptions): Promise<string> {
  if (o.provided) {
    const { tarball, sha256 } = o.provided;
    try {
      if (!(await stat(tarball)).isFile()) throw new Error('not a file');
    } catch {
      throw new ConfigError(`board.tarball: ${tarball} is not a readable file`);
    }
    const got = await sha256File(tarball);
    if (got !== sha256)
      throw new ConfigError(`board.sha256: ${tarball} has sha256 ${got}, expected ${sha256}`);
    return tarball;
  }
  return debianBaseTarball(
    { type: 'debian', suite: BOARD_SUITE, variant: 'minbase', packages: [...BOARD_PACKAGES] },
    hostArch(),
    {
      logger: o.logger,
      signal: o.signal,
      basesDir: o.cacheDir ?? path.join(cacheDir(), 'board'),
    },
  );
}
