import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorJson, reportError } from '../../src/cli/errors.js';
import { main } from '../../src/cli/main.js';
import type { Command } from '../../src/cli/command.js';
import { commands } from '../../src/cli/commands/index.js';
import { ConfigError, ToolError, UserError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';

async function lhc(argv: string[], extra: Command[] = []) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    logger: memoryLogger(),
    commands: [...commands, ...extra],
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function throwing(name: string, e: unknown): Command {
  return { name, summary: 's', help: `Usage: lhc ${name}`, run: async () => Promise.reject(e) };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const VALID = `name: t
lua:
  version: "5.4.4"
  sha256: 164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61
service:
  command: [/bin/lua, /srv/main.lua]
  listen: 8080
probes:
  - name: index
    type: http
`;

describe('lhc main', () => {
  it('--help lists every registered command and exits 0; no command at all exits 2', async () => {
    const r = await lhc(['--help']);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    for (const c of commands) {
      expect(
        lines.some((l) => l.trim().split(/ {2,}/).join('|') === `${c.name}|${c.summary}`),
      ).toBe(true);
    }
    expect((await lhc([])).code).toBe(2);
  });

  it('<cmd> --help and help <cmd> print the command help', async () => {
    for (const c of commands) {
      const r = await lhc([c.name, '--help']);
      expect(r.code).toBe(0);
      expect(r.out).toBe(c.help);
      expect(r.out.startsWith(`Usage: lhc ${c.name}`)).toBe(true);
      expect((await lhc(['help', c.name])).out).toBe(c.help);
    }
  });

  it('build --update-manifest without --manifest-lock is a usage error (exit 2), nothing built', async () => {
    const good = path.join(dir, 'lock-usage.yml');
    await writeFile(good, VALID);
    const r = await lhc(['build', good, '--update-manifest', '--out', path.join(dir, 'never')]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--update-manifest needs --manifest-lock FILE');
    expect(existsSync(path.join(dir, 'never'))).toBe(false);
  });

  it('an unknown command exits 2', async () => {
    const r = await lhc(['biuld']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown command "biuld"/);
  });

  it('validate: a valid config exits 0, a 63-character sha256 exits 2 naming the field and line', async () => {
    const good = path.join(dir, 'good.yml');
    await writeFile(good, VALID);
    const ok = await lhc(['validate', good]);
    expect(ok).toMatchObject({ code: 0, err: '' });
    expect(ok.out).toBe(`${good}: ok (t, aarch64, base scratch, lua 5.4.4, 1 probe)`);

    const bad = path.join(dir, 'lhc.yml');
    await writeFile(bad, VALID.replace(/(sha256: \S{63})\S/, '$1'));
    const r = await lhc(['validate', bad]);
    expect(r.code).toBe(2);
    expect(r.err).toBe('error: lua.sha256: expected 64 hex characters (lhc.yml:4)');
  });

  it('build with an unknown flag is a usage error; with an invalid config, a config error', async () => {
    expect(await lhc(['build', 'x.yml', '--frobnicate'])).toMatchObject({
      code: 2,
      err: 'error: lhc build: unknown option --frobnicate (see: lhc build --help)',
    });
    const r = await lhc(['build', path.join(dir, 'missing.yml'), '--out', dir]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cannot read config .*missing\.yml/);
  });

  it('user errors print their message only; tool errors their command and stderr; bugs their stack', async () => {
    const user = await lhc(['u'], [throwing('u', new UserError('fixture mismatch'))]);
    expect(user).toMatchObject({ code: 1, err: 'error: fixture mismatch' });
    const config = await lhc(['c'], [throwing('c', new ConfigError('bad'))]);
    expect(config.code).toBe(2);
    const tool = await lhc(
      ['t'],
      [throwing('t', new ToolError('mksquashfs a b', 1, 'No space left', 'command failed'))],
    );
    expect(tool).toMatchObject({
      code: 1,
      err: 'error: command failed: mksquashfs a b (exit code 1)\nNo space left',
    });
    const bug = await lhc(['b'], [throwing('b', new TypeError('x is undefined'))]);
    expect(bug.code).toBe(1);
    expect(bug.err).toMatch(/^unexpected error \(a bug in lhc\): TypeError: x is undefined\n +at /);
  });

  it('errorJson: the --json form of each error kind', () => {
    expect(errorJson(new ConfigError('bad field'))).toEqual({
      kind: 'usage',
      message: 'bad field',
      exitCode: 2,
    });
    expect(errorJson(new UserError('probe differs'))).toEqual({
      kind: 'user',
      message: 'probe differs',
      exitCode: 1,
    });
    expect(
      errorJson(new ToolError('mksquashfs a b', 1, 'No space left', 'command failed')),
    ).toEqual({
      kind: 'tool',
      message: 'command failed',
      exitCode: 1,
      command: 'mksquashfs a b',
      stderr: 'No space left',
    });
    expect(errorJson(new TypeError('x is undefined'))).toMatchObject({ kind: 'bug', exitCode: 1 });
  });

  it('reportError keeps non-Error values', () => {
    expect(reportError('weird')).toEqual({
      message: 'unexpected error (a bug in lhc): weird',
      exitCode: 1,
    });
  });
});
