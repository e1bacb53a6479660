import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseArgs } from '../../src/cli/command.js';
import { luaCommand } from '../../src/cli/commands/lua.js';
import { parseConfig, resolveConfig } from '../../src/config/load.js';
import { configInputs } from '../../src/stages/fetch.js';
import { toolchainFromDpkgStatus } from '../../src/stages/lua-in-root.js';
import { checkLuaVersion, defaultLuaUrls } from '../../src/stages/lua.js';
import { run } from '../../src/tools/exec.js';
import {
  buildrootArgv,
  crossMakeArgv,
  crossToolchain,
  inRootMakeArgv,
} from '../../src/tools/lua-make.js';

describe('Lua build command lines', () => {
  it('cross: the musl build, argv for argv', () => {
    expect(crossMakeArgv(crossToolchain('aarch64'), 2)).toEqual([
      'make',
      '-j2',
      'posix',
      'CC=aarch64-linux-gnu-gcc -specs /usr/lib/aarch64-linux-musl/musl-gcc.specs',
      'MYCFLAGS=-static -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables',
      'MYLDFLAGS=-static -Os -Wl,--gc-sections -Wl,-z,norelro',
      'AR=aarch64-linux-gnu-ar rc',
      'RANLIB=aarch64-linux-gnu-ranlib',
    ]);
    expect(crossToolchain('aarch64').packages).toEqual(['gcc-aarch64-linux-gnu', 'musl-dev:arm64']);
    expect(crossToolchain('x86_64').specs).toBe('/usr/lib/x86_64-linux-musl/musl-gcc.specs');
  });

  it('in-root: musl-gcc in the build root, made by mmdebstrap from the given sources', () => {
    expect(inRootMakeArgv()).toEqual([
      'make',
      '-j1',
      'posix',
      'CC=musl-gcc',
      'MYCFLAGS=-static -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables',
      'MYLDFLAGS=-static -Os -Wl,--gc-sections -Wl,-z,norelro',
    ]);
    expect(
      buildrootArgv({
        suite: 'bookworm',
        arch: 'aarch64',
        out: '/c/r.tar',
        mirrors: ['/etc/apt/sources.list.d/debian.sources'],
      }),
    ).toEqual([
      'mmdebstrap',
      '--arch=arm64',
      '--variant=minbase',
      '--include=build-essential,musl-tools',
      '--quiet',
      'bookworm',
      '/c/r.tar',
      '/etc/apt/sources.list.d/debian.sources',
    ]);
  });

  it('toolchain identity comes from the dpkg database, installed packages only', async () => {
    const status = await readFile('/var/lib/dpkg/status', 'utf8');
    const id = toolchainFromDpkgStatus(status);
    const make = (await run(['dpkg-query', '-W', '-f=${Version}', 'make'])).stdout;
    expect(id).toContain(`make=${make}`);
    const removed =
      'Package: gcc-99\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: musl\nStatus: install ok installed\nVersion: 2\n';
    expect(toolchainFromDpkgStatus(removed)).toBe('musl=2');
  });

  it('only Lua 5.3.x and 5.4.x are accepted', () => {
    expect(() => checkLuaVersion('5.4.6')).not.toThrow();
    expect(() => checkLuaVersion('5.3.6')).not.toThrow();
    expect(() => checkLuaVersion('5.1.5')).toThrow(/unsupported Lua version "5.1.5"/);
    expect(defaultLuaUrls('5.4.4')).toEqual(['https://www.lua.org/ftp/lua-5.4.4.tar.gz']);
  });
});

describe('lhc lua argv and lhc fetch inputs', () => {
  it('--url may be repeated, in both spellings, order kept', () => {
    expect(
      parseArgs(['--url', 'a', '--version', '5.4.4', '--url=b', '--out', 'd'], luaCommand),
    ).toEqual({
      options: { url: ['a', 'b'], version: '5.4.4', out: 'd' },
      positionals: [],
    });
    expect(() => parseArgs(['--url'], luaCommand)).toThrow(
      'lhc lua: option --url needs a value (see: lhc lua --help)',
    );
  });

  it('configInputs lists the Lua source and a downloaded base tarball', () => {
    const sha = 'a'.repeat(64);
    const raw = parseConfig(`
name: t
lua: { version: "5.4.4", sha256: "${sha}" }
base: { type: tarball, urls: ["https://example.org/root.tar.gz"], sha256: "${'b'.repeat(64)}" }
service: { command: ["/bin/lua"], inetd: true }
probes: [{ name: p, type: gopher, fixture: f }]
`);
    const inputs = configInputs(resolveConfig(raw, '/x/lhc.yml'));
    expect(inputs).toEqual([
      { name: 'lua-5.4.4.tar.gz', urls: ['https://www.lua.org/ftp/lua-5.4.4.tar.gz'], sha256: sha },
      { name: 'base tarball', urls: ['https://example.org/root.tar.gz'], sha256: 'b'.repeat(64) },
    ]);
  });
});
