/**
 * How Lua is compiled, as data: the make command lines for both strategies and the host paths
 * the musl cross toolchain needs. The same argv feeds the build and the cache key, so a flag
 * change always means a rebuild.
 */
export type LuaArch = 'aarch64' | 'x86_64';
export type LuaStrategy = 'cross' | 'in-root';

/**
 * Size over speed: the interpreter is copied into every image. Per-function sections let the
 * linker drop what neither Lua nor musl's start-up reaches. Lua reports errors with longjmp, so
 * unwind tables are dead weight. `-z norelro`: in a static, non-PIE musl binary nothing applies
 * PT_GNU_RELRO (musl's dynamic linker does that), yet the aarch64 linker pads the file to a
 * 64 KiB boundary for it (about 30 KB here). Link-time optimisation would save only 4 KB more
 * (270,424 against 274,616 bytes for 5.4.4) for 70 % more compile time, and many times that for
 * the in-root build under QEMU, so it is left out.
 */
export const LUA_MYCFLAGS =
  '-static -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables';
export const LUA_MYLDFLAGS = '-static -Os -Wl,--gc-sections -Wl,-z,norelro';

export interface CrossToolchain {
  arch: LuaArch;
  /** GNU triplet prefix of the compiler and binutils, e.g. `aarch64-linux-gnu-`. */
  prefix: string;
  gcc: string;
  /** musl's gcc specs file: turns the glibc cross compiler into a musl one. */
  specs: string;
  /** musl's static libc, hashed into the cache key (it is linked into the binary). */
  libc: string;
  strip: string;
  /** Debian packages that provide the above, for error messages. */
  packages: string[];
}

export function crossToolchain(arch: LuaArch): CrossToolchain {
  const prefix = `${arch === 'aarch64' ? 'aarch64' : 'x86_64'}-linux-gnu-`;
  const muslDir = `/usr/lib/${arch}-linux-musl`;
  const debArch = arch === 'aarch64' ? 'arm64' : 'amd64';
  return {
    arch,
    prefix,
    gcc: `${prefix}gcc`,
    specs: `${muslDir}/musl-gcc.specs`,
    libc: `${muslDir}/libc.a`,
    strip: `${prefix}strip`,
    packages: [`gcc-${arch === 'aarch64' ? 'aarch64' : 'x86-64'}-linux-gnu`, `musl-dev:${debArch}`],
  };
}

/** `make posix` for the musl cross build (run in the unpacked source's top directory). */
export function crossMakeArgv(tc: CrossToolchain, jobs = 1): string[] {
  return [
    'make',
    `-j${jobs}`,
    'posix',
    `CC=${tc.gcc} -specs ${tc.specs}`,
    `MYCFLAGS=${LUA_MYCFLAGS}`,
    `MYLDFLAGS=${LUA_MYLDFLAGS}`,
    `AR=${tc.prefix}ar rc`,
    `RANLIB=${tc.prefix}ranlib`,
  ];
}

/** The build inside the target's own root, where musl-gcc is the native musl compiler. */
export function inRootMakeArgv(jobs = 1): string[] {
  return [
    'make',
    `-j${jobs}`,
    'posix',
    'CC=musl-gcc',
    `MYCFLAGS=${LUA_MYCFLAGS}`,
    `MYLDFLAGS=${LUA_MYLDFLAGS}`,
  ];
}

/** Debian packages of the in-root build root (sorted: the list is part of its cache key). */
export const BUILDROOT_PACKAGES = ['build-essential', 'musl-tools'] as const;

/** The mmdebstrap command that makes the build root as a tarball. */
export function buildrootArgv(opts: {
  suite: string;
  arch: LuaArch;
  out: string;
  mirrors: string[];
}): string[] {
  return [
    'mmdebstrap',
    `--arch=${opts.arch === 'aarch64' ? 'arm64' : 'amd64'}`,
    '--variant=minbase',
    `--include=${[...BUILDROOT_PACKAGES].sort().join(',')}`,
    '--quiet',
    opts.suite,
    opts.out,
    ...opts.mirrors,
  ];
}
