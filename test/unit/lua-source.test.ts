import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UserError } from '../../src/core/errors.js';
import { entryProblem, extractLuaSource } from '../../src/stages/lua-source.js';
import { run } from '../../src/tools/exec.js';

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-lua-src-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A tree shaped like the Lua release: lua-V/Makefile and lua-V/src/lua.c. */
async function luaTree(version: string): Promise<string> {
  const top = path.join(tmp, 'tree', `lua-${version}`);
  await mkdir(path.join(top, 'src'), { recursive: true });
  await writeFile(path.join(top, 'Makefile'), 'all:\n');
  await writeFile(path.join(top, 'src', 'lua.c'), 'int main(void) { return 0; }\n');
  return path.dirname(top);
}

/** GNU tar with -P keeps absolute and ".." names verbatim, as a hostile archive would have them. */
async function gnuTar(out: string, cwd: string, names: string[]): Promise<string> {
  await run(['tar', '-cPzf', out, ...names], { cwd });
  return out;
}

async function expectRefused(tarball: string, pattern: RegExp): Promise<void> {
  const dest = path.join(tmp, 'out');
  await mkdir(dest);
  const err = await extractLuaSource(tarball, dest, '5.4.4').then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(pattern);
  // Nothing is unpacked from a refused archive.
  expect(await readdir(dest)).toEqual([]);
}

describe('extractLuaSource', () => {
  it('unpacks a release-shaped tarball and returns its top directory', async () => {
    const tree = await luaTree('5.4.4');
    const tarball = await gnuTar(path.join(tmp, 'ok.tar.gz'), tree, ['lua-5.4.4']);
    const dest = path.join(tmp, 'out');
    await mkdir(dest);
    const dir = await extractLuaSource(tarball, dest, '5.4.4');
    expect(dir).toBe(path.join(dest, 'lua-5.4.4'));
    expect(existsSync(path.join(dir, 'src', 'lua.c'))).toBe(true);
  });

  it('refuses ".." paths', async () => {
    const tree = await luaTree('5.4.4');
    await writeFile(path.join(tmp, 'evil'), 'x');
    const tarball = await gnuTar(path.join(tmp, 'dotdot.tar.gz'), tree, ['lua-5.4.4', '../evil']);
    await expectRefused(tarball, /\.\.\/evil: path contains "\.\."/);
    expect(existsSync(path.join(tmp, 'out', '..', 'evil'))).toBe(true); // the original, untouched
  });

  it('refuses absolute paths', async () => {
    const tree = await luaTree('5.4.4');
    const abs = path.join(tmp, 'abs-target');
    await writeFile(abs, 'x');
    const tarball = await gnuTar(path.join(tmp, 'abs.tar.gz'), tree, ['lua-5.4.4', abs]);
    await expectRefused(tarball, new RegExp(`${abs}: absolute path`));
  });

  it('refuses symlinks', async () => {
    const tree = await luaTree('5.4.4');
    await symlink('/etc/passwd', path.join(tree, 'lua-5.4.4', 'src', 'passwd'));
    const tarball = await gnuTar(path.join(tmp, 'link.tar.gz'), tree, ['lua-5.4.4']);
    await expectRefused(tarball, /lua-5\.4\.4\/src\/passwd: entry type SymbolicLink/);
  });

  it('refuses a tarball of another version or another project', async () => {
    const tree = await luaTree('5.3.6');
    const tarball = await gnuTar(path.join(tmp, 'other.tar.gz'), tree, ['lua-5.3.6']);
    await expectRefused(tarball, /outside the top-level directory lua-5\.4\.4\//);
  });

  it('refuses a file that is not a tar archive', async () => {
    const junk = path.join(tmp, 'junk.tar.gz');
    await writeFile(junk, 'not a tarball at all');
    await expectRefused(junk, /not a readable tar archive|does not look like the Lua/);
  });

  it('entryProblem accepts plain entries under the top directory', () => {
    expect(entryProblem('lua-5.4.4/src/lapi.c', 'File', 'lua-5.4.4')).toBeUndefined();
    expect(entryProblem('lua-5.4.4/', 'Directory', 'lua-5.4.4')).toBeUndefined();
    expect(entryProblem('./lua-5.4.4/doc/', 'Directory', 'lua-5.4.4')).toBeUndefined();
    expect(entryProblem('lua-5.4.4/../x', 'File', 'lua-5.4.4')).toBe('path contains ".."');
    expect(entryProblem('lua-5.4.4/dev', 'CharacterDevice', 'lua-5.4.4')).toMatch(
      /CharacterDevice/,
    );
  });
});
