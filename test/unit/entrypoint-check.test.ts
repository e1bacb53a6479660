/**
 * The entrypoint check on real ELF files: aarch64 programs built here with the musl cross
 * compiler (static and dynamic), musl's aarch64 loader from the host's musl:arm64, and the
 * host's own x86_64 binaries as the wrong architecture.
 */
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../../src/core/errors.js';
import { readElf } from '../../src/elf/elf.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import {
  checkEntrypoint,
  shebangInterpreter,
  type EntrypointArch,
} from '../../src/stages/entrypoint-check.js';
import { crossToolchain } from '../../src/tools/lua-make.js';
import { run } from '../../src/tools/exec.js';
import { requireTool } from '../support/require-tool.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lhc-entrypoint-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const check = (root: string, command0: string, arch: EntrypointArch) =>
  checkEntrypoint(stageContext({ logger: memoryLogger(), workDir: tmp }), { root, command0, arch });

/** musl's loader is its libc.so (the host has it from musl:arm64, installed with musl-dev:arm64). */
const MUSL_LOADER = '/usr/lib/aarch64-linux-musl/libc.so';
const bin = {
  static: path.join(tmp, 'hello-static'),
  musl: path.join(tmp, 'hello-musl'),
};

beforeAll(async () => {
  const tc = crossToolchain('aarch64');
  await requireTool(tc.gcc, tc.packages[0]);
  const src = path.join(tmp, 'hello.c');
  writeFileSync(src, 'int main(void) { return 0; }\n');
  const musl = [tc.gcc, '-specs', tc.specs];
  await run([...musl, '-static', '-o', bin.static, src]);
  await run([...musl, '-o', bin.musl, src]);
}, 120_000);

let n = 0;
/** A fresh root holding `files` (in-root path → host file to copy, or text), all mode 0755. */
function makeRoot(files: Record<string, string | { text: string; mode?: number }>): string {
  const root = path.join(tmp, `root-${n++}`);
  mkdirSync(root);
  for (const [p, f] of Object.entries(files)) {
    const dest = path.join(root, p);
    mkdirSync(path.dirname(dest), { recursive: true });
    if (typeof f === 'string') copyFileSync(f, dest);
    else writeFileSync(dest, f.text);
    chmodSync(dest, typeof f === 'string' ? 0o755 : (f.mode ?? 0o755));
  }
  return root;
}

async function failure(p: Promise<unknown>): Promise<UserError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(UserError);
  return e as UserError;
}

describe('entrypoint check: ELF binaries', () => {
  it('accepts a static aarch64 binary', async () => {
    expect((await readElf(bin.static))?.isStatic).toBe(true);
    const root = makeRoot({ '/bin/app': bin.static });
    expect(await check(root, '/bin/app', 'aarch64')).toEqual(['/bin/app']);
  });

  it('refuses the wrong architecture, naming both and the fix', async () => {
    const root = makeRoot({ '/bin/app': bin.static, '/bin/true': '/bin/true' });
    const host = await readElf('/bin/true');
    expect(host?.machineName).toBe('x86_64');
    const e = await failure(check(root, '/bin/true', 'aarch64'));
    expect(e.message).toMatch(
      /^service\.command\[0\] \/bin\/true: .*ELF for x86_64, but arch is aarch64/,
    );
    expect(e.message).toContain('build of it for aarch64');
    const back = await failure(check(root, '/bin/app', 'x86_64'));
    expect(back.message).toContain('ELF for aarch64, but arch is x86_64');
  });

  it('refuses a dynamic binary whose loader is missing from the root, even when the host has it', async () => {
    const interp = (await readElf(bin.musl))?.interp;
    expect(interp).toBe('/lib/ld-musl-aarch64.so.1');
    const root = makeRoot({ '/bin/app': bin.musl });
    const e = await failure(check(root, '/bin/app', 'aarch64'));
    expect(e.message).toContain('needs its loader /lib/ld-musl-aarch64.so.1, which the root lacks');
    expect(e.message).toContain('statically linked');
    expect(e.message).toContain('a base that has the loader');
  });

  it('accepts a dynamic binary whose loader is in the root, through an absolute /lib symlink', async () => {
    const root = makeRoot({
      '/bin/app': bin.musl,
      '/usr/lib/ld-musl-aarch64.so.1': MUSL_LOADER,
    });
    // Resolved chroot-style: the host's /usr/lib has no ld-musl-aarch64.so.1.
    symlinkSync('/usr/lib', path.join(root, 'lib'));
    expect(await check(root, '/bin/app', 'aarch64')).toEqual([
      '/bin/app',
      '/lib/ld-musl-aarch64.so.1',
    ]);
  });

  it('refuses a loader of the wrong architecture', async () => {
    const root = makeRoot({ '/bin/app': bin.musl, '/lib/ld-musl-aarch64.so.1': '/bin/true' });
    const e = await failure(check(root, '/bin/app', 'aarch64'));
    expect(e.message).toContain('/lib/ld-musl-aarch64.so.1 is an ELF for x86_64');
  });

  it('refuses a missing entrypoint, a non-executable one and one that is neither ELF nor script', async () => {
    const root = makeRoot({
      '/bin/app': bin.static,
      '/bin/plain': { text: 'echo hi\n' },
      '/bin/noexec': { text: '#!/bin/app\n', mode: 0o644 },
    });
    expect((await failure(check(root, '/bin/nope', 'aarch64'))).message).toContain(
      '/bin/nope is not in the root',
    );
    expect((await failure(check(root, '/bin/noexec', 'aarch64'))).message).toContain(
      'is not executable',
    );
    expect((await failure(check(root, '/bin/plain', 'aarch64'))).message).toContain(
      'neither an ELF executable nor a script',
    );
  });
});

describe('entrypoint check: scripts', () => {
  it('follows #! interpreters, nested, to a static binary', async () => {
    const root = makeRoot({
      '/bin/sh': bin.static,
      '/srv/inner': { text: '#! /bin/sh -e\nexit 0\n' },
      '/srv/outer': { text: '#!/srv/inner\n' },
    });
    expect(await check(root, '/srv/outer', 'aarch64')).toEqual([
      '/srv/outer',
      '/srv/inner',
      '/bin/sh',
    ]);
  });

  it('names the script when its interpreter is missing or of the wrong architecture', async () => {
    const root = makeRoot({
      '/srv/py': { text: '#!/usr/bin/python3 -u\nprint(1)\n' },
      '/srv/x86': { text: '#!/bin/true\n' },
      '/srv/rel': { text: '#!python3\n' },
      '/bin/true': '/bin/true',
    });
    const py = await failure(check(root, '/srv/py', 'aarch64'));
    expect(py.message).toBe(
      'service.command[0] /srv/py (a script for /usr/bin/python3): /usr/bin/python3 is not in the root: add it (files, base.packages or a base that has it)',
    );
    const x86 = await failure(check(root, '/srv/x86', 'aarch64'));
    expect(x86.message).toContain('(a script for /bin/true): /bin/true is an ELF for x86_64');
    expect((await failure(check(root, '/srv/rel', 'aarch64'))).message).toContain(
      'not an absolute path',
    );
  });

  it('stops a #! loop', async () => {
    const root = makeRoot({ '/srv/loop': { text: '#!/srv/loop\n' } });
    expect((await failure(check(root, '/srv/loop', 'aarch64'))).message).toContain(
      'too many nested #! interpreters',
    );
  });

  it('reads the interpreter as the kernel splits the #! line', () => {
    expect(shebangInterpreter(Buffer.from('#!/bin/sh\n'))).toBe('/bin/sh');
    expect(shebangInterpreter(Buffer.from('#! \t/usr/bin/env lua -x\n'))).toBe('/usr/bin/env');
    expect(shebangInterpreter(Buffer.from('\x7fELF'))).toBeUndefined();
    expect(shebangInterpreter(Buffer.from('#!\n'))).toBe('');
  });
});
