/**
 * Proves a built interpreter is what the image needs before it is cached: a 64-bit static ELF
 * for the target machine (checked from its headers), that starts, reports the expected version
 * and runs a script touching the libraries services use (string, table, io, os). Foreign
 * binaries run through QEMU user-mode: binfmt when registered, else qemu-<arch>-static.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { hostArch } from '../core/arch.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { readElf, staticProblems } from '../elf/elf.js';
import { run } from '../tools/exec.js';
import type { LuaArch } from '../tools/lua-make.js';

export class LuaVerifyError extends UserError {}

/** argv prefix that runs a binary of `arch` on this host. */
export function emulatorPrefix(arch: LuaArch, binfmtDir = '/proc/sys/fs/binfmt_misc'): string[] {
  if (hostArch() === arch) return [];
  const entry = path.join(binfmtDir, `qemu-${arch}`);
  if (existsSync(entry) && readFileSync(entry, 'utf8').startsWith('enabled')) return [];
  return [`qemu-${arch}-static`];
}

/**
 * The smoke script: exits non-zero with Lua's own error message when anything is off and
 * prints one marker line when all is well. arg[1] is a scratch directory for the io checks.
 */
export const SMOKE_SCRIPT = `
local dir = assert(arg[1], "usage: smoke.lua DIR")
-- string
assert(("hello world"):gsub("o", "0") == "hell0 w0rld", "string.gsub")
assert(string.format("%5.2f|%d|%s", 3.14159, 42, "x") == " 3.14|42|x", "string.format")
assert(("a,b,,c"):find(",,", 1, true) == 4, "string.find")
assert(string.rep("ab", 3, "-") == "ab-ab-ab", "string.rep")
assert(select(2, ("k=v"):match("(%w+)=(%w+)")) == "v", "string.match")
-- table
local t = {}
for i = 1, 100 do t[#t + 1] = i * 7 % 101 end
table.sort(t, function(a, b) return a > b end)
assert(t[1] == 100 and t[100] == 1 and #t == 100, "table.sort")
assert(table.concat({ 1, 2, 3 }, ",") == "1,2,3", "table.concat")
table.insert(t, 1, "first"); assert(table.remove(t, 1) == "first", "table.insert/remove")
-- io
local name = dir .. "/io-check.txt"
local f = assert(io.open(name, "w"))
f:write("line one\\n", 42, "\\n"); f:close()
local lines = {}
for l in io.lines(name) do lines[#lines + 1] = l end
assert(#lines == 2 and lines[2] == "42", "io.lines")
local r = assert(io.open(name, "rb")); assert(r:read("a") == "line one\\n42\\n", "io.read"); r:close()
-- os
assert(os.remove(name), "os.remove")
assert(io.open(name, "r") == nil, "file still there after os.remove")
assert(math.type(os.time()) == "integer", "os.time")
assert(os.date("!%Y-%m-%d", 86400) == "1970-01-02", "os.date")
assert(os.getenv("LHC_SMOKE") == "yes", "os.getenv")
assert(type(os.clock()) == "number", "os.clock")
io.write("lhc-smoke-ok ", _VERSION, "\\n")
`;

/** Throws a LuaVerifyError naming every failed check; logs what passed. */
export async function verifyLua(
  binary: string,
  opts: { version: string; arch: LuaArch; logger?: Logger; timeoutMs?: number },
): Promise<void> {
  const info = await readElf(binary).catch((e: unknown) => {
    throw new LuaVerifyError(`${binary}: cannot read ELF headers: ${(e as Error).message}`);
  });
  const problems = staticProblems(info, opts.arch);
  if (problems.length > 0) {
    throw new LuaVerifyError(
      `${binary} is not a static ${opts.arch} executable: ${problems.join('; ')}`,
    );
  }
  const prefix = emulatorPrefix(opts.arch);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const v = await run([...prefix, binary, '-v'], { reject: false, timeoutMs, logger: opts.logger });
  // Lua 5.3 and 5.4 print the banner on stdout; accept stderr too rather than depend on it.
  const banner = `${v.stdout}${v.stderr}`.trim();
  if (
    v.exitCode !== 0 ||
    !new RegExp(`^Lua ${opts.version.replaceAll('.', '\\.')}(\\s|$)`).test(banner)
  ) {
    throw new LuaVerifyError(
      `${binary} -v: expected "Lua ${opts.version}", got ${JSON.stringify(banner.split('\n')[0] ?? '')} (exit code ${v.exitCode})`,
    );
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-lua-smoke-'));
  try {
    const script = path.join(dir, 'smoke.lua');
    await writeFile(script, SMOKE_SCRIPT);
    const s = await run([...prefix, binary, script, dir], {
      reject: false,
      timeoutMs,
      env: { LHC_SMOKE: 'yes' },
      logger: opts.logger,
    });
    const expected = `lhc-smoke-ok Lua ${opts.version.split('.').slice(0, 2).join('.')}`;
    if (s.exitCode !== 0 || s.stdout.trim() !== expected) {
      throw new LuaVerifyError(
        `${binary}: smoke script (string, table, io, os) failed with exit code ${s.exitCode}: ${(s.stderr.trim() || s.stdout.trim()).split('\n').slice(0, 5).join('\n')}`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  opts.logger?.info(
    `verified ${binary}: static ${opts.arch} ELF, prints Lua ${opts.version}, smoke script ok`,
  );
}
