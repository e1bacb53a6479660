/** Which Debian/Ubuntu package provides each host tool, so a missing tool gets an actionable error. */
export const TOOL_PACKAGES: Record<string, string> = {
  'systemd-nspawn': 'systemd-container',
  'systemd-socket-activate': 'systemd',
  'systemd-analyze': 'systemd',
  mksquashfs: 'squashfs-tools',
  unsquashfs: 'squashfs-tools',
  'qemu-aarch64-static': 'qemu-user-static',
  'aarch64-linux-gnu-gcc': 'gcc-aarch64-linux-gnu',
  'aarch64-linux-gnu-strip': 'binutils-aarch64-linux-gnu',
  'aarch64-linux-gnu-ar': 'binutils-aarch64-linux-gnu',
  'aarch64-linux-gnu-ranlib': 'binutils-aarch64-linux-gnu',
  mmdebstrap: 'mmdebstrap',
  'musl-gcc': 'musl-tools',
  'x86_64-linux-gnu-gcc': 'gcc',
  'x86_64-linux-gnu-strip': 'binutils',
  readelf: 'binutils',
  curl: 'curl',
  make: 'make',
  strace: 'strace',
  nsenter: 'util-linux',
  losetup: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  runc: 'runc',
  lua5_4: 'lua5.4',
  'lua5.4': 'lua5.4',
  'dpkg-deb': 'dpkg',
  'apt-get': 'apt',
  xz: 'xz-utils',
  gzip: 'gzip',
  tar: 'tar',
  sudo: 'sudo',
  bash: 'bash',
};

export function packageFor(tool: string): string | undefined {
  return TOOL_PACKAGES[tool];
}
