/**
 * The hostile-output cases that need mksquashfs: pack's image and manifest, with a symlink planted
 * at their names in the out dir (the attack wrote the manifest into the link's target as root).
 * Each must replace the link, leave the host files as they were (canary checksums) and leave no
 * staging dir. The cases that need no host tool are in test/unit/hostile-outputs.test.ts.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { commands } from '../../src/cli/commands/index.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { packImage } from '../../src/stages/pack.js';
import { LUA_SOURCES, seededBuildCache } from '../support/debian-inputs.js';
import { requireTool } from '../support/require-tool.js';

let top: string;
let root: string;
let host: string;

function checksums(files: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of files)
    out[f] = existsSync(f) ? createHash('sha256').update(readFileSync(f)).digest('hex') : 'absent';
  return out;
}

beforeAll(async () => {
  await requireTool('mksquashfs');
  top = await mkdtemp(path.join(os.tmpdir(), 'lhc-hostile-pack-'));
  root = path.join(top, 'root');
  host = path.join(top, 'host');
  await mkdir(path.join(root, 'data'), { recursive: true });
  await mkdir(path.join(root, 'usr'));
  await writeFile(path.join(root, 'hello'), 'hello\n');
  await mkdir(host);
  await writeFile(path.join(host, 'image-victim'), 'host image victim\n');
  await writeFile(path.join(host, 'manifest-victim'), 'host manifest victim\n');
});

afterAll(async () => {
  if (top) await rm(top, { recursive: true, force: true });
});

describe('pack never writes through a symlink at an artifact name', () => {
  it('image, data template and manifest replace planted symlinks; host files unchanged', async () => {
    const out = path.join(top, 'out');
    await mkdir(out);
    const missing = path.join(host, 'would-be-created');
    await symlink(path.join(host, 'image-victim'), path.join(out, 't.squashfs'));
    await symlink(path.join(host, 'manifest-victim'), path.join(out, 't.manifest.json'));
    await symlink(missing, path.join(out, 't-data.tar.gz'));
    const canaries = [
      path.join(host, 'image-victim'),
      path.join(host, 'manifest-victim'),
      missing,
      '/etc/passwd',
      '/etc/hostname',
    ];
    const before = checksums(canaries);
    const logger = memoryLogger();

    const r = await packImage(stageContext({ logger, workDir: out, outDir: out }), {
      root,
      name: 't',
      epoch: 0,
    });

    expect(checksums(canaries)).toEqual(before);
    expect(existsSync(missing)).toBe(false);
    for (const f of [r.image, r.manifest, r.dataTemplate])
      expect((await lstat(f)).isFile(), f).toBe(true);
    expect((await readFile(r.image)).subarray(0, 4).toString('latin1')).toBe('hsqs');
    expect(JSON.parse(await readFile(r.manifest, 'utf8'))).toMatchObject({ name: 't' });
    const log = logger.lines.join('\n');
    for (const n of ['t.squashfs', 't.manifest.json', 't-data.tar.gz'])
      expect(log).toMatch(
        new RegExp(`${n.replace(/\./g, '\\.')} was a symlink \\(to .*\\): replaced`),
      );
    expect(readdirSync(out).sort()).toEqual(['t-data.tar.gz', 't.manifest.json', 't.squashfs']);
  });
});

describe('lhc lua --out never writes through a symlink at DIR/lua', () => {
  it('replaces the planted link with the interpreter (0755); the host file is unchanged', async () => {
    const { cacheDir } = await seededBuildCache();
    const out = path.join(top, 'lua-out');
    await mkdir(out);
    const victim = path.join(host, 'lua-victim');
    await writeFile(victim, 'host file: must never change\n');
    await symlink(victim, path.join(out, 'lua'));
    const before = checksums([victim, '/etc/passwd']);
    const saved = process.env.LHC_CACHE_DIR;
    process.env.LHC_CACHE_DIR = cacheDir;
    const lines: string[] = [];
    const logger = memoryLogger();
    let code: number;
    try {
      code = await main(
        ['lua', '--version', '5.4.4', '--sha256', LUA_SOURCES['5.4.4'].sha256, '--out', out],
        { out: (l) => void lines.push(l), err: (l) => void lines.push(l), logger, commands },
      );
    } finally {
      if (saved === undefined) delete process.env.LHC_CACHE_DIR;
      else process.env.LHC_CACHE_DIR = saved;
    }
    expect(code, lines.join('\n')).toBe(0);
    const st = await lstat(path.join(out, 'lua'));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o755);
    expect(checksums([victim, '/etc/passwd'])).toEqual(before);
    expect(logger.lines.join('\n')).toMatch(/was a symlink .*replaced, not written through/);
    expect(readdirSync(out).filter((n) => n.startsWith('.lhc-tmp-'))).toEqual([]);
  });
});
