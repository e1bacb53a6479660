/**
 * mksquashfs command lines as data. Flags verified with squashfs-tools 4.5.1 (DESIGN.md): the same
 * tree gives the same bytes whatever the processor count, umask or file times.
 */

export interface MksquashfsOptions {
  source: string;
  image: string;
  /** Seconds since 1970 for the superblock and every inode. */
  epoch: number;
  /** Mode of the image's top directory; a temp dir made with mkdtemp would otherwise give 0700. */
  rootMode?: number;
  /** Data block size; 1 MiB lets xz see a whole small binary at once (smaller image). */
  blockSize?: string;
  processors?: number;
}

export const ROOT_MODE = 0o755;

export function mksquashfsArgv(o: MksquashfsOptions): string[] {
  const argv = [
    'mksquashfs',
    o.source,
    o.image,
    '-noappend',
    // The builder's uid (a CI runner's 1001, a developer's 1000) must not reach the image.
    '-all-root',
    '-no-xattrs',
    // A hard link is an accident of how the tree was copied; duplicates are deduplicated anyway.
    '-no-hardlinks',
    // The board never NFS-exports the root; the export table is only bytes.
    '-no-exports',
    '-mkfs-time',
    String(o.epoch),
    '-all-time',
    String(o.epoch),
    '-root-mode',
    (o.rootMode ?? ROOT_MODE).toString(8).padStart(4, '0'),
    '-comp',
    'xz',
    '-b',
    o.blockSize ?? '1M',
    '-quiet',
    '-no-progress',
  ];
  if (o.processors !== undefined) argv.push('-processors', String(o.processors));
  return argv;
}

/** SOURCE_DATE_EPOCH together with -mkfs-time/-all-time makes mksquashfs refuse to run. */
export function mksquashfsEnv(): Record<string, string | undefined> {
  return { SOURCE_DATE_EPOCH: undefined };
}
