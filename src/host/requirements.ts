/**
 * What lhc needs from the host, in one table: every program src/ runs has a row with the Debian
 * package that provides it. The exec wrapper refuses a program without a row (a bug caught by the
 * first test that runs it), doctor checks the rows, setup installs their packages.
 * Package names are the same on Debian and Ubuntu.
 */
import { hostArch } from '../core/arch.js';

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';
export const QEMU_BINFMT_CONF = '/usr/lib/binfmt.d/qemu-aarch64.conf';
export const MUSL_SPECS = '/usr/lib/aarch64-linux-musl/musl-gcc.specs';
export const MUSL_SPECS_X86_64 = '/usr/lib/x86_64-linux-musl/musl-gcc.specs';
export const LHC_DEB_SRC = '/etc/apt/sources.list.d/lhc-deb-src.sources';
export const LHC_DEB_SRC_LIST = '/etc/apt/sources.list.d/lhc-deb-src.list';

export function isAarch64(arch: string): boolean {
  return arch === 'aarch64' || arch === 'arm64';
}

/**
 * Why a tool is needed. A config needs only some features (see `featuresFor`); doctor without a
 * config checks them all.
 */
export type Feature =
  /** Every build: containers, images, mounts. */
  | 'core'
  /** An aarch64 config on a non-aarch64 host: QEMU user-mode through binfmt. */
  | 'emulation'
  /** An aarch64 config on an aarch64 host: the trace uses host strace instead of QEMU. */
  | 'native-trace'
  /** `lua.strategy: cross` (the default). */
  | 'cross-lua'
  /** `arch: x86_64` with cross-built Lua: the host's musl toolchain. */
  | 'cross-lua-x86_64'
  /** `base.type: debian` or `lua.strategy: in-root`: mmdebstrap. */
  | 'debian-root'
  /** `service.inetd: true`: one container per connection. */
  | 'inetd'
  /** `service.listen: PORT`: probes enter the container's network namespace. */
  | 'listen'
  /** http(s) inputs (lua.urls, base.urls). */
  | 'download'
  /** Dating builds by the config's last git commit (else `epoch`/SOURCE_DATE_EPOCH). */
  | 'git-epoch'
  /** Privileged steps when lhc does not run as root. */
  | 'privilege'
  /** The OCI bundle check with runc. */
  | 'oci'
  /** Only the test suite and the benchmark run it; setup installs it so `npm test` works. */
  | 'tests'
  /** Part of every Debian/Ubuntu system (Essential or priority required): checked, never installed. */
  | 'system';

/** A program on PATH, the package that provides it, and whether lhc can do without it. */
export interface ToolRequirement {
  tool: string;
  pkg: string;
  why: string;
  features: readonly Feature[];
  optional?: boolean;
}

/** Programs every Debian/Ubuntu system has; listed so the exec wrapper knows them. */
const SYSTEM_TOOLS: Record<string, string> = {
  bash: 'bash',
  sh: 'dash',
  cat: 'coreutils',
  chmod: 'coreutils',
  chown: 'coreutils',
  cp: 'coreutils',
  env: 'coreutils',
  id: 'coreutils',
  ls: 'coreutils',
  mkdir: 'coreutils',
  mkfifo: 'coreutils',
  rm: 'coreutils',
  rmdir: 'coreutils',
  sha256sum: 'coreutils',
  sleep: 'coreutils',
  stat: 'coreutils',
  tee: 'coreutils',
  truncate: 'coreutils',
  find: 'findutils',
  kill: 'procps',
  gzip: 'gzip',
  tar: 'tar',
  dpkg: 'dpkg',
  'dpkg-deb': 'dpkg',
  'dpkg-query': 'dpkg',
  'apt-get': 'apt',
  mount: 'mount',
  umount: 'mount',
  losetup: 'mount',
  findmnt: 'util-linux',
  setpriv: 'util-linux',
};

export function toolRequirements(arch: string): ToolRequirement[] {
  const native = isAarch64(arch);
  const rows: ToolRequirement[] = [
    {
      tool: 'systemd-nspawn',
      pkg: 'systemd-container',
      why: 'runs the root for tracing and verify',
      features: ['core'],
    },
    { tool: 'mksquashfs', pkg: 'squashfs-tools', why: 'packs the image', features: ['core'] },
    { tool: 'unsquashfs', pkg: 'squashfs-tools', why: 'reads images back', features: ['core'] },
    {
      tool: 'qemu-aarch64-static',
      pkg: 'qemu-user-static',
      why: 'runs aarch64 code on this host (binfmt F flag)',
      features: ['emulation'],
      optional: native,
    },
    {
      tool: 'systemd-socket-activate',
      pkg: 'systemd',
      why: 'one container per connection (inetd services)',
      features: ['inetd'],
    },
    {
      tool: 'nsenter',
      pkg: 'util-linux',
      why: "probes a listening service inside the container's network",
      features: ['listen'],
    },
    {
      tool: 'curl',
      pkg: 'curl',
      why: 'downloads inputs and probes http services',
      features: ['download', 'listen'],
    },
    // On an aarch64 host the native gcc and binutils provide these triplet-prefixed names too.
    {
      tool: 'aarch64-linux-gnu-gcc',
      pkg: native ? 'gcc' : 'gcc-aarch64-linux-gnu',
      why: 'builds static Lua for aarch64',
      features: ['cross-lua'],
    },
    ...['strip', 'ar', 'ranlib'].map((t) => ({
      tool: `aarch64-linux-gnu-${t}`,
      pkg: native ? 'binutils' : 'binutils-aarch64-linux-gnu',
      why: 'builds static Lua for aarch64',
      features: ['cross-lua'] as Feature[],
    })),
    { tool: 'make', pkg: 'make', why: 'builds Lua', features: ['cross-lua'] },
    {
      tool: 'musl-gcc',
      pkg: 'musl-tools',
      why: 'builds Lua for arch: x86_64 configs',
      features: ['cross-lua-x86_64'],
      optional: true,
    },
    ...(native
      ? []
      : ['gcc', 'strip'].map((t) => ({
          tool: `x86_64-linux-gnu-${t}`,
          pkg: t === 'gcc' ? 'gcc' : 'binutils',
          why: 'builds Lua for arch: x86_64 configs',
          features: ['cross-lua-x86_64'] as Feature[],
          optional: true,
        }))),
    {
      tool: 'mmdebstrap',
      pkg: 'mmdebstrap',
      why: 'Debian bases and the in-root Lua strategy',
      features: ['debian-root'],
    },
    // Only a Recommends of mmdebstrap, which setup installs without recommends; mmdebstrap refuses a
    // foreign --arch without it ("install arch-test for foreign architecture support").
    {
      tool: 'arch-test',
      pkg: 'arch-test',
      why: 'mmdebstrap needs it for a foreign --arch',
      features: ['debian-root'],
    },
    {
      tool: 'strace',
      pkg: 'strace',
      why: 'traces on native aarch64 hosts',
      features: ['native-trace'],
      optional: !native,
    },
    {
      tool: 'git',
      pkg: 'git',
      why: "dates builds by the config's last commit",
      features: ['git-epoch'],
      optional: true,
    },
    {
      tool: 'sudo',
      pkg: 'sudo',
      why: 'privileged steps when lhc does not run as root',
      features: ['privilege'],
      optional: true,
    },
    {
      tool: 'runc',
      pkg: 'runc',
      why: 'checks the OCI bundle for the board',
      features: ['oci'],
      optional: true,
    },
    {
      tool: 'xz',
      pkg: 'xz-utils',
      why: 'unpacks .tar.xz inputs',
      features: ['download'],
      optional: true,
    },
    {
      tool: 'systemd-analyze',
      pkg: 'systemd',
      why: 'scores the generated service units (security --offline, systemd 250+); checks them in tests',
      features: ['core', 'tests'],
      optional: true,
    },
    {
      tool: 'systemd-escape',
      pkg: 'systemd',
      why: 'checks generated unit names',
      features: ['tests'],
    },
    { tool: 'lua5.4', pkg: 'lua5.4', why: 'runs example Lua on the host', features: ['tests'] },
    {
      tool: 'dpkg-source',
      pkg: 'dpkg-dev',
      why: 'apt-get source for test inputs',
      features: ['tests'],
    },
    { tool: 'readelf', pkg: 'binutils', why: 'reads ELF headers in tests', features: ['tests'] },
    {
      tool: 'mkfs.ext4',
      pkg: 'e2fsprogs',
      why: 'data partition files for the board',
      features: ['tests'],
    },
    {
      tool: 'useradd',
      pkg: 'passwd',
      why: 'a non-root runner user for the Action tests',
      features: ['tests'],
    },
    {
      tool: 'userdel',
      pkg: 'passwd',
      why: 'a non-root runner user for the Action tests',
      features: ['tests'],
    },
    {
      tool: 'visudo',
      pkg: 'sudo',
      why: 'passwordless sudo for the runner user in tests',
      features: ['tests'],
    },
    {
      tool: 'chromium',
      pkg: 'chromium',
      why: 'renders the job summary to a screenshot in tests',
      features: ['tests'],
    },
    { tool: 'node', pkg: 'nodejs', why: 'runs lhc itself', features: ['system'] },
    { tool: 'npx', pkg: 'npm', why: 'runs the test tools', features: ['tests'], optional: true },
  ];
  // The test suite's own tools never fail doctor: a user's build does not need them.
  for (const r of rows) if (r.features.includes('tests')) r.optional = true;
  for (const [tool, pkg] of Object.entries(SYSTEM_TOOLS))
    rows.push({ tool, pkg, why: 'part of every Debian/Ubuntu system', features: ['system'] });
  return rows;
}

/** The package that provides a tool on this host's architecture, if the table knows it. */
export function packageFor(tool: string, arch: string = hostArch()): string | undefined {
  return toolRequirements(arch).find((t) => t.tool === tool)?.pkg;
}

/** nodejs and npm often come from elsewhere (nvm, NodeSource, a runner image): never installed by setup. */
const NOT_INSTALLED_BY_SETUP = new Set(['nodejs', 'npm']);

/**
 * Packages the test suite needs that provide no program, so they have no row: the summary
 * screenshot shows the summary's ✅/❌ marks, which need a colour emoji font in Chromium.
 */
export const TEST_DATA_PACKAGES = ['fonts-noto-color-emoji'] as const;

/** Every package `lhc setup` makes sure is installed on this architecture. */
export function setupPackages(arch: string): string[] {
  const pkgs = new Set(
    toolRequirements(arch)
      .filter((t) => !t.features.includes('system') && !NOT_INSTALLED_BY_SETUP.has(t.pkg))
      // A native aarch64 host runs aarch64 code directly: no QEMU.
      .filter((t) => !(isAarch64(arch) && t.features.includes('emulation')))
      .map((t) => t.pkg),
  );
  pkgs.add('musl-dev');
  for (const p of TEST_DATA_PACKAGES) pkgs.add(p);
  if (!isAarch64(arch)) {
    pkgs.add('qemu-user-static');
    pkgs.add('musl-dev:arm64');
  }
  return [...pkgs].sort();
}

/** Absolute argv[0]s in these directories are host programs too, looked up by their base name. */
const SYSTEM_BIN_DIRS = ['/usr/bin/', '/usr/sbin/', '/bin/', '/sbin/', '/usr/local/bin/'];

/**
 * The host program an argv[0] names, or undefined for a path lhc made itself (a built Lua, a
 * test binary in a temp dir), which needs no package.
 */
export function hostProgram(argv0: string): string | undefined {
  if (!argv0.includes('/')) return argv0;
  const dir = SYSTEM_BIN_DIRS.find((d) => argv0.startsWith(d));
  return dir && !argv0.slice(dir.length).includes('/') ? argv0.slice(dir.length) : undefined;
}

/** Throws (a bug in lhc, not a user error) when code runs a host program the table lacks. */
export function assertKnownProgram(argv0: string): void {
  const tool = hostProgram(argv0);
  if (tool === undefined || packageFor(tool) !== undefined) return;
  throw new Error(
    `lhc runs '${tool}', which has no row in the host requirements table (src/host/requirements.ts): add it with its Debian package`,
  );
}
