import { constants } from 'node:fs';
import { chmod, copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { checkOutputFileTarget } from '../../core/build-dirs.js';
import { ConfigError } from '../../core/errors.js';
import { stageOutput } from '../../core/safe-write.js';
import { withScratchContext } from '../../core/stage.js';
import { buildLua, checkLuaVersion, type LuaArch, type LuaStrategy } from '../../stages/lua.js';
import type { Command } from '../command.js';

export const luaCommand: Command = {
  name: 'lua',
  summary: 'build a static Lua interpreter from a verified source tarball',
  help: `Usage: lhc lua --version V --sha256 H [--url U]... [--arch aarch64|x86_64] [--strategy cross|in-root] --out DIR

Builds a static, stripped Lua V (5.3.x or 5.4.x) with musl from the source tarball whose sha256
is H, verifies it (static ELF for the architecture, "lua -v", a string/table/io/os script run
under QEMU) and copies it to DIR/lua. The source comes from the store, else from the URLs
(default: the lua.org release). Results are cached: the same inputs return at once.

Options:
  --version V         Lua version, e.g. 5.4.4
  --sha256 H          sha256 of lua-V.tar.gz
  --url U             where to download the source (repeatable, tried in order)
  --arch A            aarch64 (default) or x86_64
  --strategy S        cross (default: musl cross compiler on the host) or in-root (the target's
                      own toolchain in a Debian build root, under QEMU; minutes)
  --out, -o DIR       directory to write DIR/lua to`,
  options: {
    version: { type: 'string' },
    sha256: { type: 'string' },
    url: { type: 'string', multiple: true },
    arch: { type: 'string', complete: ['aarch64', 'x86_64'] },
    strategy: { type: 'string', complete: ['cross', 'in-root'] },
    out: { type: 'string', short: 'o', complete: 'dir' },
  },
  async run({ options: flags }, ctx) {
    const urls = (flags.url ?? []) as string[];
    const need = (name: string) => {
      const v = flags[name];
      if (typeof v !== 'string')
        throw new ConfigError(`lhc lua: missing --${name} (see: lhc lua --help)`);
      return v;
    };
    const version = need('version');
    const sha256 = need('sha256');
    const out = need('out');
    try {
      checkLuaVersion(version);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
    if (!/^[0-9a-f]{64}$/.test(sha256))
      throw new ConfigError(
        `lhc lua: --sha256 must be 64 lower-case hex characters, got "${sha256}"`,
      );
    const arch = (flags.arch ?? 'aarch64') as string;
    if (arch !== 'aarch64' && arch !== 'x86_64')
      throw new ConfigError(`lhc lua: --arch must be aarch64 or x86_64, got "${arch}"`);
    const strategy = (flags.strategy ?? 'cross') as string;
    if (strategy !== 'cross' && strategy !== 'in-root') {
      throw new ConfigError(`lhc lua: --strategy must be cross or in-root, got "${strategy}"`);
    }
    for (const u of urls) {
      if (!/^(https?|file):\/\/\S+$/.test(u))
        throw new ConfigError(`lhc lua: --url must be an http(s):// or file:// URL, got "${u}"`);
    }
    // Like a build's outputs: never written through a symlink, never into a system directory.
    const dest = await checkOutputFileTarget('lhc lua --out', path.join(out, 'lua'));
    const r = await withScratchContext({ logger: ctx.logger, signal: ctx.signal }, (stage) =>
      buildLua(stage, {
        version,
        sha256,
        urls: urls.length > 0 ? urls : undefined,
        arch: arch as LuaArch,
        strategy: strategy as LuaStrategy,
      }),
    );
    await mkdir(out, { recursive: true });
    await stageOutput(
      dest,
      async (tmp) => {
        await copyFile(r.path, tmp, constants.COPYFILE_EXCL);
        await chmod(tmp, 0o755);
      },
      ctx.logger,
    );
    ctx.out(`lua      ${dest}`);
    ctx.out(`bytes    ${r.bytes}`);
    ctx.out(`sha256   ${r.sha256}`);
    ctx.out(`cached   ${r.cached ? 'yes' : 'no'}`);
    ctx.out(`seconds  ${r.seconds.toFixed(2)}`);
    return 0;
  },
};
