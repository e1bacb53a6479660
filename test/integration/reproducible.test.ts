/**
 * Two packs of the same root, in different directories, under different umask and TZ, with every
 * input file's times moved, must give byte-identical artifacts; the manifest must describe the
 * image as mksquashfs wrote it; `lhc diff` must name exactly the one file that changed.
 */
import { cp, mkdtemp, readFile, rm, utimes, writeFile, appendFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { memoryLogger } from '../../src/core/logger.js';
import { walkSorted } from '../../src/manifest/manifest.js';
import { writeSha256Sums } from '../../src/stages/outputs.js';
import { stageContext } from '../../src/core/stage.js';
import { artifactNames, packImage, type PackResult } from '../../src/stages/pack.js';
import { run } from '../../src/tools/exec.js';
import {
  expectIdenticalArtifacts,
  gophermoonLikeRoot,
  lsMode,
  sampleDataDir,
} from '../support/pack-fixtures.js';
import { requireTool } from '../support/require-tool.js';

const EPOCH = 1_700_000_000;
const NAME = 'gophermoon';
let tmp: string;
let source: { root: string; data: string };

async function copyTree(from: string, to: string): Promise<void> {
  // Keeps modes and symlinks, like a checkout would; times are moved below on purpose.
  await cp(from, to, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
}

async function touchAll(dir: string, seconds: number): Promise<void> {
  for (const rel of (await walkSorted(dir)).reverse()) {
    await utimes(path.join(dir, rel), seconds, seconds).catch(() => {});
  }
}

async function packIn(
  label: string,
  opts: { umask: number; tz: string; mtime: number; edit?: (root: string) => Promise<void> },
): Promise<{ out: string; r: PackResult }> {
  const base = path.join(tmp, label, 'deeper', 'work');
  const root = path.join(base, 'root');
  const data = path.join(base, 'data');
  const oldUmask = process.umask(opts.umask);
  const oldTz = process.env.TZ;
  process.env.TZ = opts.tz;
  try {
    await copyTree(source.root, root);
    await copyTree(source.data, data);
    await opts.edit?.(root);
    await touchAll(root, opts.mtime);
    await touchAll(data, opts.mtime);
    const out = path.join(tmp, label, 'out');
    const r = await packImage(
      stageContext({ logger: memoryLogger(), workDir: path.join(tmp, label), outDir: out }),
      { root, dataDir: data, name: NAME, epoch: EPOCH },
    );
    // SHA256SUMS is the outputs stage's: written over the three pack artifacts, as a build does.
    await writeSha256Sums(out, Object.values(artifactNames(NAME)));
    return { out, r };
  } finally {
    process.umask(oldUmask);
    if (oldTz === undefined) delete process.env.TZ;
    else process.env.TZ = oldTz;
  }
}

/** `lhc diff OLD NEW` through the CLI shell; stdout lines are collected. */
async function lhcDiff(
  oldFile: string,
  newFile: string,
): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await main(['diff', oldFile, newFile], {
    out: (l) => void lines.push(l),
    logger: memoryLogger(),
  });
  return { code, lines };
}

const files = [...Object.values(artifactNames(NAME)), 'SHA256SUMS'];
let a: { out: string; r: PackResult };
let b: { out: string; r: PackResult };

beforeAll(async () => {
  await requireTool('mksquashfs', 'squashfs-tools');
  await requireTool('unsquashfs', 'squashfs-tools');
  await requireTool('gzip', 'gzip');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-repro-'));
  source = {
    root: await gophermoonLikeRoot(path.join(tmp, 'src/root')),
    data: await sampleDataDir(path.join(tmp, 'src/data')),
  };
  a = await packIn('a', { umask: 0o022, tz: 'UTC', mtime: 1_000_000_000 });
  b = await packIn('b', { umask: 0o077, tz: 'Pacific/Kiritimati', mtime: 1_800_000_000 });
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('reproducible packing (real mksquashfs)', () => {
  it('gives byte-identical image, data template, manifest and SHA256SUMS', async () => {
    await expectIdenticalArtifacts(a.out, b.out, files);
    expect(b.r.imageSha256).toBe(a.r.imageSha256);
    expect(b.r.dataTemplateSha256).toBe(a.r.dataTemplateSha256);
  });

  it('writes SHA256SUMS that sha256sum -c accepts', async () => {
    const r = await run(['sha256sum', '-c', 'SHA256SUMS'], { cwd: a.out });
    expect(r.stdout.trim().split('\n').sort()).toEqual(
      files
        .filter((f) => f !== 'SHA256SUMS')
        .map((f) => `${f}: OK`)
        .sort(),
    );
  });

  it('has a manifest that matches what unsquashfs lists: paths, types, modes and root ownership', async () => {
    const r = await run(['unsquashfs', '-lln', '-d', '', a.r.image]);
    const listed = r.stdout
      .trim()
      .split('\n')
      .map((l) => /^(\S+) (\d+)\/(\d+)\s+\d+ \S+ \S+ (.*?)(?: -> .*)?$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => `${m[1]} ${m[2]}/${m[3]} ${m[4] || '/'}`)
      .sort();
    const fromManifest = a.r.manifestData.image
      .map((e) => `${lsMode(e.type, e.mode)} ${e.uid}/${e.gid} ${e.path}`)
      .sort();
    expect(listed.length).toBeGreaterThan(10);
    expect(fromManifest).toEqual(listed);
    const manifest = JSON.parse(await readFile(a.r.manifest, 'utf8')) as {
      data: { entries: { path: string; mode: string }[] };
    };
    expect(manifest.data.entries.find((e) => e.path === '/data/tmp')!.mode).toBe('1777');
  });

  it('lhc diff: identical builds exit 0; one changed content file is the only path reported', async () => {
    const same = await lhcDiff(a.r.manifest, b.out);
    expect(same.code).toBe(0);
    expect(same.lines.at(-1)).toBe('manifests are identical');

    const c = await packIn('c', {
      umask: 0o022,
      tz: 'UTC',
      mtime: 1_000_000_000,
      edit: async (root) => appendFile(path.join(root, 'gopher/about.txt'), 'one more line\n'),
    });
    const ctx = await lhcDiff(a.r.manifest, c.r.manifest);
    expect(ctx.code).toBe(1);
    const pathLines = ctx.lines.filter((l) => /^[+\-~] /.test(l));
    expect(pathLines).toHaveLength(1);
    expect(pathLines[0]).toMatch(
      /^~ image \/gopher\/about\.txt {2}size (\d+) → (\d+) \(\+14\), content /,
    );
    expect(ctx.lines.at(-1)).toBe('1 path differs: 0 added, 0 removed, 1 changed');
    expect(c.r.imageSha256).not.toBe(a.r.imageSha256);
  });

  it('lhc diff reports a mode change and an added file', async () => {
    const d = await packIn('d', {
      umask: 0o022,
      tz: 'UTC',
      mtime: 1_000_000_000,
      edit: async (root) => {
        await writeFile(path.join(root, 'gopher/new.txt'), 'new\n');
        await run(['chmod', '0600', path.join(root, 'gopher/about.txt')]);
      },
    });
    const ctx = await lhcDiff(a.r.manifest, d.r.manifest);
    expect(ctx.code).toBe(1);
    expect(ctx.lines.filter((l) => /^[+\-~] /.test(l))).toEqual([
      '~ image /gopher/about.txt  mode 0644 → 0600',
      '+ image /gopher/new.txt  file 0644 0:0 4 bytes',
    ]);
  });
});
