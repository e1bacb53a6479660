import { existsSync, lstatSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { UserError } from '../../src/core/errors.js';
import { memoryLogger, type Logger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { recordFixtures } from '../../src/stages/record-fixtures.js';

let dir: string;
let outside: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-record-'));
  outside = await mkdtemp(path.join(os.tmpdir(), 'lhc-record-outside-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

async function config(probes: string): Promise<LhcConfig> {
  const file = path.join(dir, 'lhc.yml');
  await writeFile(file, `name: rec\nservice: {command: [/bin/x], listen: 80}\nprobes:\n${probes}`);
  return loadConfig(file);
}

const ctxOf = (logger: Logger) => stageContext({ logger, workDir: dir });
const body = (s: string) => ({ body: Buffer.from(s, 'latin1') });

describe('recordFixtures (lhc build --update-fixtures)', () => {
  it('writes missing fixtures (creating their directory), rewrites changed ones, leaves equal ones', async () => {
    await mkdir(path.join(dir, 'fx'));
    await writeFile(path.join(dir, 'fx/same.txt'), 'same\r\n');
    await writeFile(path.join(dir, 'fx/old.txt'), 'old\n', { mode: 0o600 });
    const c = await config(`  - {name: same, type: tcp, send: "a", fixture: fx/same.txt}
  - {name: old, type: tcp, send: "b", fixture: fx/old.txt}
  - {name: fresh, type: gopher, selector: "/x", fixture: fx/new/fresh.gopher}
  - {name: page, type: http, path: /, status: 200, fixture: fx/page.html}
  - {name: nofix, type: http, path: /n, status: 404}
`);
    const logger = memoryLogger();
    const gopher = 'iHello\tfake\t(NULL)\t0\r\n.\r\n';
    const r = await recordFixtures(ctxOf(logger), {
      config: c,
      responses: {
        same: body('same\r\n'),
        old: body('new\x00bytes'),
        fresh: body(gopher),
        page: { status: 200, body: Buffer.from('<p>hi</p>') },
        nofix: { status: 500, body: Buffer.from('oops') },
      },
    });
    expect(r.map((f) => [f.probe, path.relative(dir, f.path), f.bytes, f.change])).toEqual([
      ['same', 'fx/same.txt', 6, 'unchanged'],
      ['old', 'fx/old.txt', 9, 'changed'],
      ['fresh', 'fx/new/fresh.gopher', gopher.length, 'new'],
      ['page', 'fx/page.html', 9, 'new'],
    ]);
    expect(readFileSync(path.join(dir, 'fx/old.txt'), 'latin1')).toBe('new\x00bytes');
    expect(lstatSync(path.join(dir, 'fx/old.txt')).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(dir, 'fx/new/fresh.gopher'), 'latin1')).toBe(
      'iHello\tfake\t(NULL)\t0\r\n.\r\n',
    );
    expect(lstatSync(path.join(dir, 'fx/page.html')).mode & 0o777).toBe(0o644);
    expect(logger.lines).toContain("fixture fx/old.txt: changed, 9 bytes written (probe 'old')");
    expect(logger.lines).toContain(
      `fixture fx/new/fresh.gopher: new, ${gopher.length} bytes written (probe 'fresh')`,
    );
    expect(logger.lines.join('\n')).toMatch(
      /warning: probe 'nofix': the traced run answered HTTP 500, the probe expects status 404/,
    );
    expect(logger.lines.join('\n')).not.toMatch(/fx\/same\.txt/);
    // Nothing of the staging is left beside the fixtures.
    expect(readdirSync(path.join(dir, 'fx')).sort()).toEqual([
      'new',
      'old.txt',
      'page.html',
      'same.txt',
    ]);
  });

  it('replaces a symlink at a fixture path instead of writing through it', async () => {
    const victim = path.join(dir, 'victim.txt');
    await writeFile(victim, 'keep me\n');
    await symlink('victim.txt', path.join(dir, 'f.txt'));
    const c = await config('  - {name: a, type: tcp, send: "a", fixture: f.txt}\n');
    const logger = memoryLogger();
    await recordFixtures(ctxOf(logger), { config: c, responses: { a: body('answer\n') } });
    expect(readFileSync(victim, 'utf8')).toBe('keep me\n');
    expect(lstatSync(path.join(dir, 'f.txt')).isSymbolicLink()).toBe(false);
    expect(readFileSync(path.join(dir, 'f.txt'), 'utf8')).toBe('answer\n');
    expect(logger.lines.join('\n')).toMatch(/f\.txt was a symlink \(to victim\.txt\): replaced/);
  });

  it('refuses a fixture whose directory leads out of the project (checked again at write time)', async () => {
    await mkdir(path.join(dir, 'fx'));
    const c = await config('  - {name: a, type: tcp, send: "a", fixture: fx/a.txt}\n');
    // Swapped for a link to outside after loading: the write must not follow it.
    await rm(path.join(dir, 'fx'), { recursive: true });
    await symlink(outside, path.join(dir, 'fx'));
    const e = await recordFixtures(ctxOf(memoryLogger()), {
      config: c,
      responses: { a: body('x') },
    }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).toMatch(/^probes\[0\]\.fixture: .* is outside the project /);
    expect(existsSync(path.join(outside, 'a.txt'))).toBe(false);
  });

  it('refuses two probes sharing a fixture that answered differently', async () => {
    const c = await config(`  - {name: a, type: tcp, send: "a", fixture: same.txt}
  - {name: b, type: tcp, send: "b", fixture: same.txt}
`);
    await expect(
      recordFixtures(ctxOf(memoryLogger()), {
        config: c,
        responses: { a: body('x'), b: body('y') },
      }),
    ).rejects.toThrow(
      "probes[1].fixture: probes 'a' and 'b' share the fixture same.txt but answered differently in the traced run; give them separate fixtures",
    );
    expect(existsSync(path.join(dir, 'same.txt'))).toBe(false);
    const ok = await recordFixtures(ctxOf(memoryLogger()), {
      config: c,
      responses: { a: body('x'), b: body('x') },
    });
    expect(ok.map((f) => f.change)).toEqual(['new', 'unchanged']);
  });
});
