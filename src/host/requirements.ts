/**
 * What lhc needs from the host, in one place: doctor checks it, setup installs it.
 * Package names are the same on Debian and Ubuntu.
 */

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';
export const QEMU_BINFMT_CONF = '/usr/lib/binfmt.d/qemu-aarch64.conf';
export const MUSL_SPECS = '/usr/lib/aarch64-linux-musl/musl-gcc.specs';
export const MUSL_SPECS_X86_64 = '/usr/lib/x86_64-linux-musl/musl-gcc.specs';
export const LHC_DEB_SRC = '/etc/apt/sources.list.d/lhc-deb-src.sources';
export const LHC_DEB_SRC_LIST = '/etc/apt/sources.list.d/lhc-deb-src.list';

export function isAarch64(arch: string): boolean {
  return arch === 'aarch64' || arch === 'arm64';
}

/** A tool on PATH, the package that provides it, and whether lhc can do without it. */
export interface ToolRequirement {
  tool: string;
  pkg: string;
  why: string;
  optional?: boolean;
}

export function toolRequirements(arch: string): ToolRequirement[] {
  const native = isAarch64(arch);
  return [
    {
      tool: 'systemd-nspawn',
      pkg: 'systemd-container',
      why: 'runs the root for tracing and verify',
    },
    {
      tool: 'systemd-socket-activate',
      pkg: 'systemd',
      why: 'one container per connection (inetd services)',
    },
    { tool: 'nsenter', pkg: 'util-linux', why: 'probes a listening service inside the container' },
    { tool: 'mksquashfs', pkg: 'squashfs-tools', why: 'packs the image' },
    { tool: 'unsquashfs', pkg: 'squashfs-tools', why: 'reads images back' },
    // On an aarch64 host the native gcc and binutils provide these triplet-prefixed names too.
    {
      tool: 'aarch64-linux-gnu-gcc',
      pkg: native ? 'gcc' : 'gcc-aarch64-linux-gnu',
      why: 'builds static Lua for aarch64',
    },
    {
      tool: 'aarch64-linux-gnu-strip',
      pkg: native ? 'binutils' : 'binutils-aarch64-linux-gnu',
      why: 'strips the Lua binary',
    },
    ...(native
      ? []
      : [
          {
            tool: 'x86_64-linux-gnu-gcc',
            pkg: 'gcc',
            why: 'builds Lua for arch: x86_64 configs',
            optional: true,
          },
        ]),
    { tool: 'make', pkg: 'make', why: 'builds Lua' },
    { tool: 'curl', pkg: 'curl', why: 'downloads inputs and probes services' },
    { tool: 'mmdebstrap', pkg: 'mmdebstrap', why: 'debian bases and the in-root Lua strategy' },
    { tool: 'strace', pkg: 'strace', why: 'traces on native aarch64 hosts', optional: !native },
    { tool: 'runc', pkg: 'runc', why: 'checks the OCI bundle for the board', optional: true },
    { tool: 'lua5.4', pkg: 'lua5.4', why: 'runs example Lua on the host (tests)', optional: true },
    { tool: 'dpkg-source', pkg: 'dpkg-dev', why: 'apt-get source for test inputs', optional: true },
    { tool: 'xz', pkg: 'xz-utils', why: 'unpacks .tar.xz inputs', optional: true },
    { tool: 'git', pkg: 'git', why: "dates builds by the config's last commit", optional: true },
    {
      tool: 'sudo',
      pkg: 'sudo',
      why: 'privileged steps when lhc does not run as root',
      optional: true,
    },
    {
      tool: 'mkfs.ext4',
      pkg: 'e2fsprogs',
      why: 'data partition files for the board (tests)',
      optional: true,
    },
  ];
}

/** Every package `lhc setup` makes sure is installed on this architecture. */
export function setupPackages(arch: string): string[] {
  const pkgs = new Set(toolRequirements(arch).map((t) => t.pkg));
  pkgs.add('musl-dev');
  pkgs.add('musl-tools');
  if (!isAarch64(arch)) {
    pkgs.add('qemu-user-static');
    pkgs.add('musl-dev:arm64');
  }
  return [...pkgs].sort();
}
