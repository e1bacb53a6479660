/**
 * The README's "Quick start for your own service" (issue 17): each marked block is written into a
 * fresh project with the files it names (taken from Debian packages), built with the real CLI
 * (`lhc build` with no argument, as the README says) and checked, so the README cannot rot.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  ALPINE_MINIROOTFS,
  alpineMinirootfs,
  makeApkRepository,
  serveDirectory,
} from '../support/apk-repo.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { debianDeb, extractDeb } from '../support/debian-inputs.js';
import { readmeSnippets, type Snippet } from '../support/readme-snippets.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const TSX = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;
const snippets = readmeSnippets(REPO);

const temps: string[] = [];
afterAll(async () => {
  for (const t of temps) await rm(t, { recursive: true, force: true });
});

function snippet(name: string): Snippet {
  const s = snippets.get(name);
  if (!s) throw new Error(`README.md has no <!-- snippet: ${name} --> block`);
  return s;
}

/** A fresh project (a git work tree, as the README suggests) holding the snippet as lhc.yml. */
async function project(s: Snippet): Promise<string> {
  expect(s.lang, `snippet ${s.name} (README.md:${s.line})`).toBe('yaml');
  const dir = await mkdtemp(path.join(os.tmpdir(), `lhc-readme-${s.name}-`));
  temps.push(dir);
  execFileSync('git', ['init', '-q', dir]);
  writeFileSync(path.join(dir, 'lhc.yml'), s.body);
  return dir;
}

interface BuildJson {
  ok: boolean;
  manifest: string;
  verify: { ok: boolean; probes: { name: string; ok: boolean; bytes: number }[] } | null;
}

/** Runs argv in `cwd`, collecting its output. */
function spawnIn(argv: string[], cwd: string, env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** `lhc ARGS` in `cwd`, through the CLI's real entry point. */
function lhc(args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  return spawnIn(
    [process.execPath, '--import', TSX, path.join(REPO, 'src/cli-entry.ts'), ...args],
    cwd,
    env,
  );
}

/** `lhc build --json` with no CONFIG, as the README tells the user to run it. */
async function buildProject(dir: string): Promise<BuildJson & { log: string }> {
  const { cacheDir } = await seededBuildCache();
  const r = await lhc(['build', '--json'], dir, { ...process.env, LHC_CACHE_DIR: cacheDir });
  expect(r.code, r.stderr).toBe(0);
  return { ...(JSON.parse(r.stdout) as BuildJson), log: r.stderr };
}

function imagePaths(manifestFile: string): string[] {
  const m = JSON.parse(readFileSync(manifestFile, 'utf8')) as { image: { path: string }[] };
  return m.image.map((e) => e.path);
}

const PAGE = 'hello from lhc\n';
const ALPINE_PAGE = 'hello from alpine\n';

/**
 * The busybox-httpd snippet's project, with the files the README's shell lines make: busybox from
 * Debian's busybox-static:arm64, a site, and (unless it is to be recorded) the expected page.
 */
async function busyboxProject(opts: { withFixture: boolean }): Promise<string> {
  const s = snippet('busybox-httpd');
  const dir = await project(s);
  const config = parseYaml(s.body) as {
    files: { src: string; dst: string }[];
    probes: { name: string; fixture: string }[];
  };
  expect(config.files.map((f) => f.src).sort()).toEqual(['busybox', 'www']);
  expect(config.probes.map((p) => p.fixture)).toEqual(['expected/index.html']);
  const deb = await extractDeb(
    await debianDeb('busybox-static:arm64'),
    path.join(dir, '.deb-unpacked'),
  );
  copyFileSync(path.join(deb, 'bin/busybox'), path.join(dir, 'busybox'));
  await rm(deb, { recursive: true, force: true });
  mkdirSync(path.join(dir, 'www'));
  writeFileSync(path.join(dir, 'www/index.html'), PAGE);
  writeFileSync(path.join(dir, 'www/about.html'), 'not asked for by any probe\n');
  if (opts.withFixture) {
    mkdirSync(path.join(dir, 'expected'));
    copyFileSync(path.join(dir, 'www/index.html'), path.join(dir, 'expected/index.html'));
  }
  return dir;
}

describe('README quick start for your own service', () => {
  it('every marked snippet is one this test builds', () => {
    expect([...snippets.keys()].sort()).toEqual(['alpine-apk', 'busybox-httpd', 'record-fixtures']);
  });

  it('busybox-httpd: a static busybox on a scratch base serves www/ and matches its fixture', async () => {
    const dir = await busyboxProject({ withFixture: true });
    const j = await buildProject(dir);
    expect(j.ok).toBe(true);
    expect(j.verify?.ok).toBe(true);
    // The README's probe, and the same request through a real client (curl).
    const bytes = PAGE.length;
    expect(j.verify?.probes).toEqual([
      { name: 'index', ok: true, bytes },
      { name: 'index (curl)', ok: true, bytes },
    ]);
    const paths = imagePaths(j.manifest);
    // The scratch base adds nothing but mount points: busybox, the site (kept whole), no shell.
    expect(paths).toContain('/bin/busybox');
    expect(paths).toContain('/www/index.html');
    expect(paths).toContain('/www/about.html');
    expect(paths).not.toContain('/bin/sh');
    expect(paths.filter((p) => p.startsWith('/lib') || p.startsWith('/etc'))).toEqual([]);
  });

  it('alpine-apk: apk adds busybox-extras to the minirootfs, httpd serves /var/www, shell and apk are pruned', async () => {
    const s = snippet('alpine-apk');
    const dir = await project(s);
    const config = parseYaml(s.body) as {
      base: { path: string; sha256: string };
      prepare: string;
      files: { src: string; dst: string }[];
    };
    expect(config.base).toMatchObject({
      path: ALPINE_MINIROOTFS.file,
      sha256: ALPINE_MINIROOTFS.sha256,
    });
    copyFileSync(await alpineMinirootfs(), path.join(dir, ALPINE_MINIROOTFS.file));
    expect(config.files.map((f) => f.src)).toEqual(['www']);
    mkdirSync(path.join(dir, 'www'));
    writeFileSync(path.join(dir, 'www/index.html'), ALPINE_PAGE);
    mkdirSync(path.join(dir, 'expected'));
    writeFileSync(path.join(dir, 'expected/index.html'), ALPINE_PAGE);

    // Alpine's mirrors are out of reach here: a local repository holds a stand-in busybox-extras,
    // Debian's static arm64 busybox installed where Alpine's package puts it (busybox runs any
    // applet when its name starts with "busybox").
    const tree = path.join(dir, '.pkg-tree');
    await mkdir(path.join(tree, 'bin'), { recursive: true });
    const deb = await extractDeb(
      await debianDeb('busybox-static:arm64'),
      path.join(dir, '.deb-unpacked'),
    );
    copyFileSync(path.join(deb, 'bin/busybox'), path.join(tree, 'bin/busybox-extras'));
    await rm(deb, { recursive: true, force: true });
    const repo = await makeApkRepository(
      [
        {
          name: 'busybox-extras',
          version: '1.36.1-r29',
          description: 'Stand-in for Alpine busybox-extras (Debian busybox-static)',
          tree,
          epoch: 1_700_000_000,
        },
      ],
      path.join(os.tmpdir(), path.basename(dir) + '-repo'),
    );
    temps.push(repo);
    await rm(tree, { recursive: true, force: true });
    const server = await serveDirectory(repo);
    try {
      // The one substitution: the snippet's apk add, pointed at the local repository only.
      expect(config.prepare).toBe('apk add --no-cache busybox-extras');
      const local = `apk add --repositories-file /dev/null --repository http://127.0.0.1:${server.port}/ --allow-untrusted`;
      const text = s.body.replace('prepare: apk add ', `prepare: ${local} `);
      expect(text).not.toBe(s.body);
      writeFileSync(path.join(dir, 'lhc.yml'), text);

      const j = await buildProject(dir);
      expect(server.requests).toEqual([
        '/aarch64/APKINDEX.tar.gz',
        '/aarch64/busybox-extras-1.36.1-r29.apk',
      ]);
      expect(j.log).toContain('Installing busybox-extras (1.36.1-r29)');
      expect(j.ok).toBe(true);
      expect(j.verify?.ok).toBe(true);
      expect(j.verify?.probes).toContainEqual({
        name: 'index',
        ok: true,
        bytes: ALPINE_PAGE.length,
      });
      const paths = imagePaths(j.manifest);
      expect(paths).toContain('/bin/busybox-extras');
      expect(paths).toContain('/var/www/index.html');
      for (const gone of ['/bin/sh', '/bin/busybox', '/sbin/apk', '/lib/apk/db/installed'])
        expect(paths).not.toContain(gone);
      // httpd is static: nothing of musl, /etc or the rest of the minirootfs is kept.
      expect(paths.filter((p) => /^\/(etc|lib|sbin|usr\/)/.test(p))).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('record-fixtures: the README lines record the missing fixture, commit it, and the next build verifies against it', async () => {
    const s = snippet('record-fixtures');
    expect(s.lang, `snippet record-fixtures (README.md:${s.line})`).toBe('sh');
    const dir = await busyboxProject({ withFixture: false });
    const { cacheDir } = await seededBuildCache();
    // The README's `lhc` is the real CLI; git needs a committer on a bare test machine.
    const prelude = `lhc() { ${[process.execPath, '--import', TSX, path.join(REPO, 'src/cli-entry.ts')].map((a) => `'${a}'`).join(' ')} "$@"; }\n`;
    const r = await spawnIn(['bash', '-euo', 'pipefail', '-c', prelude + s.body], dir, {
      ...process.env,
      LHC_CACHE_DIR: cacheDir,
      GIT_AUTHOR_NAME: 'lhc test',
      GIT_AUTHOR_EMAIL: 'test@lhc.invalid',
      GIT_COMMITTER_NAME: 'lhc test',
      GIT_COMMITTER_EMAIL: 'test@lhc.invalid',
    });
    expect(r.code, r.stderr.slice(-4000)).toBe(0);
    expect(readFileSync(path.join(dir, 'expected/index.html'), 'utf8')).toBe(PAGE);
    expect(`${r.stdout}\n${r.stderr}`).toContain(
      `fixture expected/index.html: new, ${PAGE.length} bytes written (probe 'index')`,
    );
    // `cat` showed the recorded page; the commit holds it; the second build wrote SHA256SUMS.
    expect(r.stdout).toContain(PAGE);
    const committed = execFileSync('git', ['-C', dir, 'show', '--name-only', '--format=', 'HEAD'], {
      encoding: 'utf8',
    });
    expect(committed.split('\n')).toContain('expected/index.html');
    expect(readFileSync(path.join(dir, 'out/SHA256SUMS'), 'utf8')).toContain(
      'hello-httpd.squashfs',
    );
  });
});
