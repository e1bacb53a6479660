/**
 * What the CLI prints and where: --json objects on stdout (parsed, fields derived from the same
 * inputs), logs on stderr by verbosity, colour only on a TTY without NO_COLOR, ./lhc.yml as the
 * default config, `store list` names, and completion scripts that bash really runs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build-result.js';
import type { Command } from '../../src/cli/command.js';
import { buildJson } from '../../src/cli/commands/build.js';
import { commands } from '../../src/cli/commands/index.js';
import { main, type MainIo } from '../../src/cli/main.js';
import { loadConfig } from '../../src/config/load.js';
import { hostArch } from '../../src/core/arch.js';
import { featuresFor } from '../../src/host/config-needs.js';
import { runChecks } from '../../src/host/doctor.js';
import { realProbe } from '../../src/host/probe.js';
import { run } from '../../src/tools/exec.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const LOCK = path.join(REPO, 'examples/gophermoon/manifest.lock.json');

async function lhc(argv: string[], io: MainIo & { extra?: Command[] } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env: {},
    stdoutTTY: false,
    stderrTTY: false,
    ...io,
    commands: [...commands, ...(io.extra ?? [])],
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** Runs fn with the process in dir (configOrDefault looks for ./lhc.yml there). */
async function inDir<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const before = process.cwd();
  process.chdir(dir);
  try {
    return await fn();
  } finally {
    process.chdir(before);
  }
}

const ESC = '\x1b[';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-cli-out-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const LUA_SHA = '164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61';
const config = (name: string, probes: number, luaSha = LUA_SHA) =>
  [
    `name: ${name}`,
    `lua: { version: "5.4.4", sha256: "${luaSha}", urls: ["https://example.org/lua.tgz"] }`,
    'service: { command: [/bin/lua, /srv/main.lua], listen: 8080 }',
    'probes:',
    ...Array.from({ length: probes }, (_, i) => `  - { name: p${i}, type: http }`),
    '',
  ].join('\n');

describe('./lhc.yml is the default CONFIG', () => {
  it('validate with no argument reads ./lhc.yml; build, verify, fetch without one name the problem', async () => {
    const here = path.join(dir, 'with-config');
    await mkdir(here);
    await writeFile(path.join(here, 'lhc.yml'), config('here', 2));
    const r = await inDir(here, () => lhc(['validate']));
    expect(r).toMatchObject({
      code: 0,
      out: 'lhc.yml: ok (here, aarch64, base scratch, lua 5.4.4, 2 probes)',
    });

    const empty = path.join(dir, 'empty');
    await mkdir(empty);
    for (const cmd of ['build', 'validate', 'fetch']) {
      const e = await inDir(empty, () => lhc([cmd]));
      expect(e.code).toBe(2);
      expect(e.err).toBe(
        `error: lhc ${cmd}: no CONFIG given and no lhc.yml in ${empty} (see: lhc ${cmd} --help)`,
      );
    }
    const v = await inDir(empty, () => lhc(['verify', '--image', 'i', '--data', 'd']));
    expect(v.err).toMatch(/^error: lhc verify: no CONFIG given and no lhc\.yml in /);
  });
});

describe('--json', () => {
  it('validate: one object on stdout listing every config, valid or not; exit 2 when one is not', async () => {
    const good = path.join(dir, 'good.yml');
    const bad = path.join(dir, 'bad.yml');
    await writeFile(good, config('good', 1));
    await writeFile(bad, config('bad', 1, LUA_SHA.slice(1)));
    const ok = await lhc(['validate', good, '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out)).toEqual({
      ok: true,
      configs: [
        {
          file: good,
          ok: true,
          name: 'good',
          arch: 'aarch64',
          base: 'scratch',
          lua: '5.4.4',
          probes: 1,
          warnings: [],
        },
      ],
    });
    const mixed = await lhc(['validate', '--json', good, bad]);
    expect(mixed.code).toBe(2);
    const j = JSON.parse(mixed.out) as {
      ok: boolean;
      configs: { file: string; ok: boolean; error?: { kind: string; message: string } }[];
    };
    expect(j.ok).toBe(false);
    expect(j.configs.map((c) => [c.file, c.ok])).toEqual([
      [good, true],
      [bad, false],
    ]);
    expect(j.configs[1]!.error).toMatchObject({
      kind: 'usage',
      message: 'lua.sha256: expected 64 hex characters (bad.yml:2)',
    });
  });

  it('a usage error still answers in JSON, with the exit code unchanged; a command without --json refuses it', async () => {
    const r = await lhc(['validate', '--bogus', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.out)).toEqual({
      ok: false,
      error: {
        kind: 'usage',
        message: 'lhc validate: unknown option --bogus (see: lhc validate --help)',
        exitCode: 2,
      },
    });
    expect(r.err).toBe('error: lhc validate: unknown option --bogus (see: lhc validate --help)');
    const fetch = await lhc(['fetch', 'x.yml', '--json']);
    expect(fetch).toMatchObject({ code: 2, out: '' });
    expect(fetch.err).toMatch(/unknown option --json/);
  });

  it('doctor: the same checks as the text table, ok matching the exit code', async () => {
    const r = await lhc(['doctor', '--json']);
    const j = JSON.parse(r.out) as {
      ok: boolean;
      checks: { name: string; ok: boolean; optional: boolean }[];
    };
    expect(j.ok).toBe(r.code === 0);
    const direct = await runChecks(realProbe);
    expect(j.checks.map((c) => c.name)).toEqual(direct.map((c) => c.name));
    expect(j.ok).toBe(!direct.some((c) => !c.ok && !c.optional));
    const text = await lhc(['doctor']);
    expect(text.code).toBe(r.code);
    for (const c of j.checks) expect(text.out).toContain(c.name);
  });

  it('doctor CONFIG: what the config needs, with the field asking for it, and only those checks', async () => {
    const file = path.join(REPO, 'examples/gophermoon/lhc.yml');
    const r = await lhc(['doctor', file, '--json']);
    const j = JSON.parse(r.out) as {
      ok: boolean;
      config: string;
      needs: { feature: string; why: string }[];
      notChecked: string[];
      checks: { name: string }[];
    };
    expect(j.ok).toBe(r.code === 0);
    expect(j.config).toBe(file);
    const needs = featuresFor(await loadConfig(file), hostArch());
    expect(j.needs).toContainEqual({ feature: 'inetd', why: 'service.inetd: true' });
    expect(j.needs.map((n) => n.feature).sort()).toEqual(
      [...needs.features].filter((f) => f !== 'system').sort(),
    );
    expect(j.notChecked).not.toContain('inetd');
    expect(j.notChecked).toContain('debian-root');
    const direct = await runChecks(realProbe, needs.features);
    expect(j.checks.map((c) => c.name)).toEqual(direct.map((c) => c.name));
    const text = await lhc(['doctor', file]);
    expect(text.out).toMatch(/^ {2}inetd: service\.inetd: true$/m);
  });

  it('diff: added, removed and changed entries of two manifests, ok only when equal', async () => {
    const lock = JSON.parse(await readFile(LOCK, 'utf8')) as {
      image: { path: string; type: string; size?: number }[];
    };
    const files = lock.image.filter((e) => e.type === 'file');
    const [grown, dropped] = [files[0]!, files.at(-1)!];
    const edited = structuredClone(lock);
    edited.image = edited.image.filter((e) => e.path !== dropped.path);
    edited.image.find((e) => e.path === grown.path)!.size = grown.size! + 7;
    edited.image.push({ ...structuredClone(dropped), path: '/zz-new' });
    const newer = path.join(dir, 'new.manifest.json');
    await writeFile(newer, JSON.stringify(edited));

    const same = await lhc(['diff', LOCK, LOCK, '--json']);
    expect(same.code).toBe(0);
    expect(JSON.parse(same.out)).toMatchObject({ ok: true, added: [], removed: [], changed: [] });

    const r = await lhc(['diff', LOCK, newer, '--json']);
    expect(r.code).toBe(1);
    const j = JSON.parse(r.out) as {
      ok: boolean;
      added: { section: string; path: string }[];
      removed: { path: string }[];
      changed: {
        path: string;
        fields: string[];
        before: { size: number };
        after: { size: number };
      }[];
    };
    expect(j.ok).toBe(false);
    expect(j.added.map((e) => [e.section, e.path])).toEqual([['image', '/zz-new']]);
    expect(j.removed.map((e) => e.path)).toEqual([dropped.path]);
    expect(j.changed).toHaveLength(1);
    expect(j.changed[0]).toMatchObject({ path: grown.path, fields: ['size'] });
    expect(j.changed[0]!.after.size - j.changed[0]!.before.size).toBe(7);
  });
});

describe('build --json', () => {
  const result: BuildResult = {
    name: 'x',
    outDir: '/o',
    image: '/o/x.squashfs',
    imageSha256: 'a'.repeat(64),
    imageBytes: 10,
    dataTemplate: '/o/x-data.tar.gz',
    dataTemplateSha256: 'b'.repeat(64),
    manifest: '/o/x.manifest.json',
    sha256sums: '/o/SHA256SUMS',
    bundleDir: '/o/deploy',
    traceReport: '/o/x.trace.json',
    bytesBefore: 100,
    bytesAfter: 50,
    filesKept: 3,
    timings: [{ stage: 'pack', seconds: 1 }],
  };
  const verify = (ok: boolean): NonNullable<BuildResult['verify']> => ({
    ok,
    probes: [{ name: 'p', ok, bytes: 1 }],
    hardening: [],
  });
  it('ok follows verify; a build without verify is ok, with verify and manifestDiff null', () => {
    expect(buildJson(result)).toMatchObject({ ok: true, verify: null, manifestDiff: null });
    expect(buildJson({ ...result, verify: verify(true) }).ok).toBe(true);
    const failed = buildJson({ ...result, verify: verify(false) });
    expect(failed.ok).toBe(false);
    expect(failed.image).toEqual({ path: result.image, sha256: result.imageSha256, bytes: 10 });
  });
  it('a manifest that differs from its lock fails the build unless the lock was rewritten', () => {
    const lock = { ...result, manifestDiff: '+ image /x', verify: verify(true) };
    const failed = buildJson({
      ...lock,
      sha256sums: undefined,
      failureReport: '/o/x.build-failed.txt',
      manifestLock: { path: 'lock.json', updated: false },
    });
    expect(failed).toMatchObject({
      ok: false,
      sha256sums: null,
      failureReport: '/o/x.build-failed.txt',
      manifestDiff: '+ image /x',
      manifestUpdated: false,
    });
    const updated = buildJson({ ...lock, manifestLock: { path: 'lock.json', updated: true } });
    expect(updated).toMatchObject({ ok: true, manifestUpdated: true, failureReport: null });
  });
});

describe('verbosity and colour', () => {
  const noisy: Command = {
    name: 'noisy',
    summary: 's',
    help: 'Usage: lhc noisy',
    run: async (_a, ctx) => {
      ctx.logger.debug('dbg');
      ctx.logger.info('inf');
      ctx.logger.warn('wrn');
      ctx.out('result');
      return 0;
    },
  };
  it('--quiet keeps warnings, --verbose (or LHC_DEBUG) adds debug lines; stdout is untouched', async () => {
    const normal = await lhc(['noisy'], { extra: [noisy] });
    expect(normal).toMatchObject({ out: 'result', err: 'inf\nwarning: wrn' });
    expect((await lhc(['noisy', '-q'], { extra: [noisy] })).err).toBe('warning: wrn');
    expect((await lhc(['noisy', '--verbose'], { extra: [noisy] })).err).toBe(
      'debug: dbg\ninf\nwarning: wrn',
    );
    const legacy = await lhc(['noisy'], { extra: [noisy], env: { LHC_DEBUG: '1' } });
    expect(legacy.err).toBe('debug: dbg\ninf\nwarning: wrn');
    expect((await lhc(['noisy', '--quiet'], { extra: [noisy], env: { LHC_DEBUG: '1' } })).err).toBe(
      'warning: wrn',
    );
  });

  it('colour only on a TTY and without NO_COLOR, never with --json', async () => {
    const tty = { stdoutTTY: true, stderrTTY: true };
    const plainDiff = await lhc(['diff', LOCK, path.join(dir, 'new.manifest.json')]);
    expect(plainDiff.out).not.toContain(ESC);
    const coloured = await lhc(['diff', LOCK, path.join(dir, 'new.manifest.json')], tty);
    expect(coloured.out).toContain(`${ESC}32m+ image /zz-new`);
    // eslint-disable-next-line no-control-regex -- SGR colour sequences start with ESC
    expect(coloured.out.replace(/\x1b\[\d+m/g, '')).toBe(plainDiff.out);
    const noColor = await lhc(['diff', LOCK, path.join(dir, 'new.manifest.json')], {
      ...tty,
      env: { NO_COLOR: '1' },
    });
    expect(noColor.out).toBe(plainDiff.out);
    const json = await lhc(['diff', LOCK, path.join(dir, 'new.manifest.json'), '--json'], tty);
    expect(json.out).not.toContain(ESC);
    expect((await lhc(['noisy'], { ...tty, extra: [noisy] })).err).toContain(`${ESC}33mwarning:`);
  });
});

describe('store list', () => {
  it('prints sha256, size, and the name and URL a config gives that content', async () => {
    const saved = process.env.LHC_CACHE_DIR;
    process.env.LHC_CACHE_DIR = path.join(dir, 'cache');
    try {
      const a = randomBytes(2048);
      const b = randomBytes(10);
      const fa = path.join(dir, 'a.bin');
      const fb = path.join(dir, 'b.bin');
      await writeFile(fa, a);
      await writeFile(fb, b);
      expect((await lhc(['store', 'add', fa, fb])).code).toBe(0);
      const cfg = path.join(dir, 'store.yml');
      await writeFile(cfg, config('s', 1, sha(a)));
      const r = await lhc(['store', 'list', '--config', cfg]);
      expect(r.code).toBe(0);
      const rows = r.out.split('\n').map((l) => l.trim().split(/ {2,}/));
      const expected = [
        [sha(a), '2.0 KiB', 'lua-5.4.4.tar.gz', 'https://example.org/lua.tgz'],
        [sha(b), '10 B', '-', '-'],
      ].sort((x, y) => x[0]!.localeCompare(y[0]!));
      expect(rows).toEqual(expected);
      expect((await lhc(['store', 'list', 'extra'])).code).toBe(2);
    } finally {
      if (saved === undefined) delete process.env.LHC_CACHE_DIR;
      else process.env.LHC_CACHE_DIR = saved;
    }
  });
});

describe('help and completion come from the command table', () => {
  it("each command's usage line names every option it takes (verify's names --show)", () => {
    for (const c of commands) {
      const usage = c.help.split('\n\n')[0]!;
      for (const name of Object.keys(c.options ?? {})) expect(usage, c.name).toContain(`--${name}`);
      if (c.json) expect(usage, c.name).toContain('--json');
    }
    expect(commands.find((c) => c.name === 'verify')!.help.split('\n')[0]).toContain('--show');
  });

  /** What bash completes for the words typed so far (the last one may be partial). */
  async function complete(script: string, words: string[]): Promise<string[]> {
    const file = path.join(dir, 'lhc.bash');
    await writeFile(file, script);
    const shellWords = words.map((w) => `'${w}'`).join(' ');
    const r = await run([
      'bash',
      '-c',
      `source ${file}; COMP_WORDS=(${shellWords}); COMP_CWORD=${words.length - 1}; _lhc; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ]);
    return r.stdout.split('\n').filter(Boolean);
  }

  it('lhc completion bash: bash -n accepts it; "lhc b" completes to build, options and subcommands too', async () => {
    const r = await lhc(['completion', 'bash']);
    expect(r.code).toBe(0);
    const file = path.join(dir, 'syntax.bash');
    await writeFile(file, r.out);
    expect((await run(['bash', '-n', file], { reject: false })).exitCode).toBe(0);
    expect(await complete(r.out, ['lhc', 'b'])).toEqual(['build']);
    expect(await complete(r.out, ['lhc', ''])).toEqual(
      expect.arrayContaining(commands.map((c) => c.name)),
    );
    expect(await complete(r.out, ['lhc', 'build', '--o'])).toEqual(['--out']);
    expect(await complete(r.out, ['lhc', 'verify', '--s'])).toEqual(['--show']);
    expect(await complete(r.out, ['lhc', 'store', ''])).toEqual(['add', 'list']);
    expect(await complete(r.out, ['lhc', 'lua', '--arch', ''])).toEqual(['aarch64', 'x86_64']);
    expect(await complete(r.out, ['lhc', 'completion', 'z'])).toEqual(['zsh']);
  });

  it('lhc completion zsh: a compdef for every command and its options', async () => {
    const r = await lhc(['completion', 'zsh']);
    expect(r.code).toBe(0);
    expect(r.out.startsWith('#compdef lhc\n')).toBe(true);
    expect(r.out).toMatch(/^ {2}compdef _lhc lhc$/m);
    for (const c of commands) {
      const line = r.out.split('\n').find((l) => l.startsWith(`    ${c.name}) _arguments`));
      expect(line, c.name).toBeDefined();
      for (const name of Object.keys(c.options ?? {})) expect(line).toContain(`--${name}`);
    }
    // Quotes balance, so zsh reads the whole script (zsh itself is not a host requirement).
    expect((r.out.match(/'/g) ?? []).length % 2).toBe(0);
    const u = await lhc(['completion', 'fish']);
    expect(u).toMatchObject({ code: 2 });
    expect(u.err).toMatch(/unknown shell "fish", expected bash or zsh/);
  });
});
