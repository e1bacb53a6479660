/**
 * A corpus of hostile output and work dirs for a build that runs as root. Every case is either
 * refused (a UserError naming the flag) or contained (the artifact replaces a planted symlink
 * instead of writing through it), and after every case: no host file touched (checksums of a
 * canary set), nothing left behind (no staging dir, no new out dir, no temp work dir).
 *
 * The build()-level cases run with an already aborted signal: if the dirs were accepted the
 * build would stop at its first stage, so the only thing that can refuse them is the check.
 * Cases needing mksquashfs (image, manifest) are in test/integration/hostile-outputs.test.ts.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig, type LhcConfig } from '../../src/config/load.js';
import {
  createOwnDir,
  OUT_MARKER,
  systemDirProblem,
  WORK_MARKER,
} from '../../src/core/build-dirs.js';
import { Board } from '../../src/board/machine.js';
import { checkManifestLock } from '../../src/manifest/diff.js';
import type { Manifest } from '../../src/manifest/manifest.js';
import { UserError } from '../../src/core/errors.js';
import { memoryLogger, type Logger } from '../../src/core/logger.js';
import { writeOutputFile } from '../../src/core/safe-write.js';
import { writeDeployBundle } from '../../src/deploy/bundle.js';
import { main } from '../../src/cli/main.js';
import { commands } from '../../src/cli/commands/index.js';
import { build } from '../../src/pipeline.js';
import type { PruneReport } from '../../src/prune/report.js';
import { writeDataTemplate } from '../../src/stages/data-template.js';
import { writeSha256Sums, writeTraceReport } from '../../src/stages/outputs.js';

let top: string;
/** A project holding lhc.yml, not inside a git work tree. */
let proj: string;
/** Host files an attacker aims at through planted symlinks. */
let host: string;
/** TMPDIR while a case runs: must hold nothing afterwards. */
let tmpdir: string;
let config: LhcConfig;
let savedTmp: string | undefined;

const HOST_CANARIES = ['/etc/passwd', '/etc/hostname', '/etc/hosts'];

function canaryFiles(): string[] {
  const files = [...HOST_CANARIES];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(host);
  return files.sort();
}

function checksums(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of canaryFiles())
    out[f] = existsSync(f) ? createHash('sha256').update(readFileSync(f)).digest('hex') : 'absent';
  return out;
}

/** No staging dir anywhere below `dir`. */
function stagingLeft(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) =>
    path.basename(p).startsWith('.lhc-tmp-'),
  );
}

const REPORT: PruneReport = {
  name: 't',
  base: { entries: 1, bytes: 1 },
  kept: { entries: 0, bytes: 0, list: [] },
  dropped: { entries: 1, bytes: 1 },
  failedLookups: [],
  writtenUnderData: [],
  writtenOutsideData: [],
  missingLibraries: [],
  droppedByConfig: [],
};

let before: Record<string, string>;

beforeAll(async () => {
  top = await mkdtemp(path.join(os.tmpdir(), 'lhc-hostile-out-'));
  proj = path.join(top, 'proj');
  host = path.join(top, 'host');
  tmpdir = path.join(top, 'tmp');
  await mkdir(proj);
  await mkdir(tmpdir);
  await mkdir(path.join(host, 'etc-like'), { recursive: true });
  await writeFile(path.join(host, 'victim'), 'host file: must never change\n');
  await writeFile(path.join(host, 'etc-like', 'shadow'), 'root:x:secret\n');
  await writeFile(path.join(proj, 'ok.gopher'), 'iok\r\n.\r\n');
  await writeFile(
    path.join(proj, 'lhc.yml'),
    'name: t\nservice: { command: [/bin/busybox, cat], inetd: true }\n' +
      'probes: [{ name: p, type: gopher, fixture: ok.gopher }]\n',
  );
  config = await loadConfig(path.join(proj, 'lhc.yml'));
  savedTmp = process.env.TMPDIR;
});

afterAll(async () => {
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
  await rm(top, { recursive: true, force: true });
});

let out: string;

/** The deploy bundle of a small inetd service, written into `dir`. */
function bundleInto(dir: string, logger: Logger) {
  return writeDeployBundle({
    name: 't',
    outDir: dir,
    service: { command: ['/bin/busybox', 'cat'], inetd: true },
    imageFile: 't.squashfs',
    dataTemplateFile: 't-data.tar.gz',
    logger,
  });
}
let n = 0;
beforeEach(async () => {
  process.env.TMPDIR = tmpdir;
  out = path.join(top, `out-${++n}`);
  before = checksums();
});

afterEach(() => {
  expect(checksums()).toEqual(before);
  expect(stagingLeft(top)).toEqual([]);
  expect(readdirSync(tmpdir)).toEqual([]);
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
});

const victim = () => path.join(host, 'victim');

/** Runs build() with dirs that, if accepted, get it no further than the first stage. */
async function buildWith(o: {
  outDir: string;
  workDir?: string;
  keepWorkDir?: boolean;
  force?: boolean;
}) {
  const logger = memoryLogger();
  const error = await build(config, {
    logger,
    verify: false,
    // As the CLI does: a named work dir is kept (so that, were `/` accepted, nothing is removed).
    keepWorkDir: o.workDir !== undefined,
    ...o,
    signal: AbortSignal.abort(),
  }).then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  return { error, lines: logger.lines };
}

async function expectRefused(
  o: Parameters<typeof buildWith>[0],
  message: RegExp,
): Promise<{ lines: string[] }> {
  const r = await buildWith(o);
  expect(r.error).toBeInstanceOf(UserError);
  expect(r.error!.message).toMatch(message);
  expect((r.error as UserError).exitCode).toBe(2);
  return r;
}

async function expectAccepted(o: Parameters<typeof buildWith>[0]): Promise<{ lines: string[] }> {
  const r = await buildWith(o);
  // Accepted: it got as far as the first stage, which saw the aborted signal.
  expect(r.error?.name).toBe('AbortError');
  return r;
}

describe('artifacts are never written through a symlink planted at their name', () => {
  it('the trace report replaces the symlink', async () => {
    await mkdir(out);
    const file = path.join(out, 't.trace.json');
    await symlink(victim(), file);
    const logger = memoryLogger();
    await writeTraceReport(REPORT, file, logger);
    expect((await lstat(file)).isFile()).toBe(true);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ name: 't' });
    expect(logger.lines.join('\n')).toMatch(
      /t\.trace\.json was a symlink \(to .*victim\): replaced/,
    );
  });

  it('SHA256SUMS replaces the symlink', async () => {
    await mkdir(out);
    await writeFile(path.join(out, 'a'), 'a\n');
    await symlink(victim(), path.join(out, 'SHA256SUMS'));
    const logger = memoryLogger();
    const sums = await writeSha256Sums(out, ['a'], logger);
    expect((await lstat(sums)).isFile()).toBe(true);
    expect(await readFile(sums, 'utf8')).toMatch(/^[0-9a-f]{64} {2}a\n$/);
    expect(logger.lines.join('\n')).toMatch(/SHA256SUMS was a symlink/);
  });

  it('the data template replaces the symlink', async () => {
    await mkdir(out);
    const file = path.join(out, 't-data.tar.gz');
    await symlink(victim(), file);
    const logger = memoryLogger();
    const t = await writeDataTemplate({ dataPath: '/data', epoch: 0, out: file, logger });
    expect((await lstat(file)).isFile()).toBe(true);
    expect((await stat(file)).size).toBe(t.bytes);
    expect(logger.lines.join('\n')).toMatch(/t-data\.tar\.gz was a symlink/);
  });

  it('a symlink to a missing host path (write would create it) is replaced too', async () => {
    await mkdir(out);
    const target = path.join(host, 'created-by-attack');
    await symlink(target, path.join(out, 'SHA256SUMS'));
    await writeSha256Sums(out, []);
    expect(existsSync(target)).toBe(false);
  });

  it('deploy/ as a symlink to a host dir: the link is replaced, the host dir is untouched', async () => {
    await mkdir(out);
    await symlink(path.join(host, 'etc-like'), path.join(out, 'deploy'));
    const logger = memoryLogger();
    const b = await bundleInto(out, logger);
    expect((await lstat(b.dir)).isDirectory()).toBe(true);
    expect(readdirSync(path.join(host, 'etc-like'))).toEqual(['shadow']);
    expect(logger.lines.join('\n')).toMatch(/deploy was a symlink \(to .*etc-like\)/);
  });

  it('an earlier deploy/ is replaced whole, and the log says so', async () => {
    await mkdir(path.join(out, 'deploy'), { recursive: true });
    await writeFile(path.join(out, 'deploy', 'stale.service'), 'old\n');
    const logger = memoryLogger();
    await bundleInto(out, logger);
    expect(existsSync(path.join(out, 'deploy', 'stale.service'))).toBe(false);
    expect(logger.lines.join('\n')).toMatch(/replaced the earlier .*\/deploy/);
  });

  it('a directory at a file output is refused, and left as it was', async () => {
    await mkdir(path.join(out, 'SHA256SUMS'), { recursive: true });
    await writeFile(path.join(out, 'SHA256SUMS', 'keep'), 'k');
    await expect(writeOutputFile(path.join(out, 'SHA256SUMS'), 'x')).rejects.toThrow(
      /SHA256SUMS is a directory; lhc writes a file there/,
    );
    expect(await readFile(path.join(out, 'SHA256SUMS', 'keep'), 'utf8')).toBe('k');
  });

  it('a writer that fails leaves the earlier output and no staging dir', async () => {
    await mkdir(out);
    await writeFile(path.join(out, 'SHA256SUMS'), 'earlier\n');
    await expect(writeSha256Sums(out, ['missing'])).rejects.toThrow(/ENOENT/);
    expect(await readFile(path.join(out, 'SHA256SUMS'), 'utf8')).toBe('earlier\n');
  });
});

describe('out and work dirs that are refused, naming the flag', () => {
  it('--out / (the attack created six entries in /)', async () => {
    await expectRefused({ outDir: '/' }, /^--out \/: refused, it is the file system root/);
  });

  for (const dir of ['/etc', '/var/lib', '/usr', '/lib', '/root', '/tmp', '/proc/self'])
    it(`--out ${dir}`, async () => {
      await expectRefused({ outDir: dir }, new RegExp(`^--out ${dir}: refused`));
    });

  it('--out through a symlink to /etc', async () => {
    await symlink('/etc', out);
    await expectRefused(
      { outDir: out },
      /^--out .*out-\d+ \(which resolves to \/etc\): refused, it is a system directory/,
    );
  });

  it('--out is the config project root', async () => {
    await expectRefused(
      { outDir: proj },
      /^--out .*proj: refused, it is the config's project root/,
    );
    expect(readdirSync(proj).sort()).toEqual(['lhc.yml', 'ok.gopher']);
  });

  it('--out holding a foreign deploy/ (it used to be deleted silently)', async () => {
    await mkdir(path.join(out, 'deploy'), { recursive: true });
    await writeFile(path.join(out, 'deploy', 'mine.txt'), 'the user\u2019s\n');
    await expectRefused(
      { outDir: out },
      /^--out .*out-\d+ already holds deploy, which lhc did not write there \(no \.lhc-out\).*--force/,
    );
    expect(readdirSync(out)).toEqual(['deploy']);
    expect(readdirSync(path.join(out, 'deploy'))).toEqual(['mine.txt']);
  });

  it('--out holding a symlink at the manifest name', async () => {
    await mkdir(out);
    await symlink(victim(), path.join(out, 't.manifest.json'));
    await expectRefused({ outDir: out }, /already holds t\.manifest\.json/);
    expect(await readlink(path.join(out, 't.manifest.json'))).toBe(victim());
  });

  it('--work-dir /', async () => {
    await expectRefused(
      { outDir: out, workDir: '/' },
      /^--work-dir \/: refused, it is the file system root/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('--work-dir holding foreign root/ and pruned/root (they used to be deleted)', async () => {
    const work = path.join(top, `work-${n}`);
    await mkdir(path.join(work, 'root'), { recursive: true });
    await mkdir(path.join(work, 'pruned', 'root'), { recursive: true });
    await writeFile(path.join(work, 'root', 'data'), 'x');
    await writeFile(path.join(work, 'pruned', 'root', 'data'), 'y');
    await expectRefused(
      { outDir: out, workDir: work },
      /^--work-dir .*work-\d+ already holds root, pruned, which lhc did not write there \(no \.lhc-work\)/,
    );
    expect(await readFile(path.join(work, 'root', 'data'), 'utf8')).toBe('x');
    expect(await readFile(path.join(work, 'pruned', 'root', 'data'), 'utf8')).toBe('y');
    expect(existsSync(out)).toBe(false);
  });
});

describe('lhc build (the CLI) refuses with the flag named, exit 2, no stack trace', () => {
  async function lhc(argv: string[]) {
    const err: string[] = [];
    const code = await main(argv, {
      out: () => {},
      err: (l) => err.push(l),
      logger: memoryLogger(),
      commands,
      signal: AbortSignal.abort(),
    });
    return { code, err: err.join('\n') };
  }

  it('--out /', async () => {
    const r = await lhc(['build', path.join(proj, 'lhc.yml'), '--out', '/']);
    expect(r.err).toMatch(/--out \/: refused, it is the file system root/);
    expect(r.err).not.toMatch(/\n\s+at /);
    expect(r.code).toBe(2);
  });

  it('--work-dir holding a foreign root/, then accepted with --force', async () => {
    const work = path.join(top, `work-${n}`);
    await mkdir(path.join(work, 'root'), { recursive: true });
    const argv = ['build', path.join(proj, 'lhc.yml'), '--out', out, '--work-dir', work];
    const r = await lhc(argv);
    expect(r.err).toMatch(/--work-dir .* already holds root, which lhc did not write there/);
    expect(r.code).toBe(2);
    expect(existsSync(out)).toBe(false);
    const forced = await lhc([...argv, '--force']);
    expect(forced.err).not.toMatch(/refused|already holds/);
    expect(existsSync(path.join(work, WORK_MARKER))).toBe(true);
    expect(existsSync(path.join(work, 'root'))).toBe(true);
  });
});

describe('dirs that are accepted', () => {
  it('a new out dir is created and marked; a second build into it is fine', async () => {
    await expectAccepted({ outDir: out });
    expect(readdirSync(out)).toEqual([OUT_MARKER]);
    await writeFile(path.join(out, 't.manifest.json'), 'from the first build\n');
    await mkdir(path.join(out, 'deploy'));
    await expectAccepted({ outDir: out });
  });

  it('an out dir holding only unrelated files is accepted and they stay', async () => {
    await mkdir(out);
    await writeFile(path.join(out, 'notes.txt'), 'n');
    await expectAccepted({ outDir: out });
    expect(readdirSync(out).sort()).toEqual([OUT_MARKER, 'notes.txt']);
  });

  it('--force takes over foreign outputs and says which', async () => {
    await mkdir(path.join(out, 'deploy'), { recursive: true });
    const r = await expectAccepted({ outDir: out, force: true });
    expect(r.lines.join('\n')).toMatch(
      /--force: replacing deploy in .*out-\d+, which lhc did not write/,
    );
  });

  it('a work dir lhc did not create loses only what lhc put there', async () => {
    const work = path.join(top, `work-${n}`);
    await mkdir(work);
    await writeFile(path.join(work, 'notes.txt'), 'n');
    await expectAccepted({ outDir: out, workDir: work, keepWorkDir: false });
    expect(readdirSync(work)).toEqual(['notes.txt']);
  });

  it('a work dir lhc marked is taken again', async () => {
    const work = path.join(top, `work-${n}`);
    await mkdir(path.join(work, 'root'), { recursive: true });
    await writeFile(path.join(work, WORK_MARKER), '');
    await expectAccepted({ outDir: out, workDir: work });
  });
});

describe('an output name cannot be a marker or staging name', () => {
  it.each(['.lhc-out', '.lhc-tmp-x'])('outputs.image: %s', (name) => {
    const yaml =
      'name: t\nservice: { command: [/bin/busybox, cat], inetd: true }\n' +
      `outputs: { image: "${name}" }\n`;
    expect(() => parseConfig(yaml)).toThrow(/outputs\.image.*"\.lhc-" are lhc's own markers/);
  });
});

describe('systemDirProblem', () => {
  it.each([
    ['/', true],
    ['/etc', true],
    ['/etc/systemd', true],
    ['/var/lib', true],
    ['/lib64', true],
    ['/sys/kernel/x/y', true],
    ['/tmp', true],
    ['/home/u', true],
    ['/var/lib/lhc', false],
    ['/tmp/x', false],
    ['/home/u/out', false],
    ['/srv/build/out', false],
  ])('%s refused: %s', (dir, refused) => {
    expect(systemDirProblem(dir, '/home/u') !== undefined).toBe(refused);
  });
});

describe('the manifest lock (--update-manifest) is written like an artifact', () => {
  const m: Manifest = {
    lhcManifest: 1,
    name: 't',
    image: [{ path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 }],
    data: { path: '/data', entries: [] },
  };

  it('a lock that is a symlink to a host file is replaced, not written through', async () => {
    await mkdir(out);
    const lock = path.join(out, 'lhc.manifest.lock');
    await symlink(victim(), lock);
    const logger = memoryLogger();
    // The link's target is read as the lock (it is not a manifest): that is an error, not a write.
    await expect(checkManifestLock(m, lock, true, logger)).rejects.toThrow();
    await rm(lock);
    await symlink(path.join(host, 'absent-target'), lock);
    const r = await checkManifestLock(m, lock, true, logger);
    expect(r.updated).toBe(true);
    expect((await lstat(lock)).isFile()).toBe(true);
    expect(existsSync(path.join(host, 'absent-target'))).toBe(false);
    expect(logger.lines.join('\n')).toMatch(/was a symlink .*replaced, not written through/);
  });

  it('a lock in a system directory is refused, naming the flag', async () => {
    const err = await checkManifestLock(m, '/etc/lhc-hostile.lock', true).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/^--manifest-lock \/etc\/lhc-hostile.lock: refused/);
    expect(existsSync('/etc/lhc-hostile.lock')).toBe(false);
  });
});

describe('lhc lua --out', () => {
  it('a system directory is refused before anything is built, exit 2, no stack trace', async () => {
    const err: string[] = [];
    const code = await main(
      ['lua', '--version', '5.4.4', '--sha256', 'a'.repeat(64), '--out', '/usr/bin'],
      {
        out: () => {},
        err: (l) => err.push(l),
        logger: memoryLogger(),
        commands,
        signal: AbortSignal.abort(),
      },
    );
    expect(err.join('\n')).toMatch(/lhc lua --out \/usr\/bin\/lua: refused/);
    expect(err.join('\n')).not.toMatch(/\n\s+at /);
    expect(code).toBe(2);
  });
});

describe("the board's work dir (removed whole afterwards)", () => {
  it('holding files lhc did not write is refused before the board is unpacked', async () => {
    const work = path.join(top, `board-${n}`);
    await mkdir(work);
    await writeFile(path.join(work, 'precious'), 'mine\n');
    const err = await Board.boot({
      tarball: '/nonexistent.tar',
      workDir: work,
      logger: memoryLogger(),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/board work dir .*: refused, it already holds precious/);
    expect(readdirSync(work)).toEqual(['precious']);
  });

  it('/ and system dirs are refused; a symlink is not a directory lhc made', async () => {
    await expect(createOwnDir('board work dir', '/')).rejects.toThrow(
      /refused, it is the file system root/,
    );
    await expect(createOwnDir('board work dir', '/var/lib')).rejects.toThrow(/system directory/);
    const link = path.join(top, `board-link-${n}`);
    await symlink(path.join(host, 'etc-like'), link);
    await expect(createOwnDir('board work dir', link)).rejects.toThrow(/refused/);
  });

  it('an absent or empty directory is taken', async () => {
    const fresh = path.join(top, `board-new-${n}`, 'board');
    expect(await createOwnDir('board work dir', fresh)).toBe(fresh);
    expect(await createOwnDir('board work dir', fresh)).toBe(fresh);
  });
});
