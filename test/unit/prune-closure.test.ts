/**
 * The prune closure on a synthetic merged-/usr root holding real aarch64 ELF files from Debian's
 * libc6:arm64 and coreutils:arm64, with a hand-written trace (no container needed).
 */
import {
  chmod,
  chown,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, resolveConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { readElf } from '../../src/elf/elf.js';
import { summarizeReport } from '../../src/prune/report.js';
import { writeTraceReport } from '../../src/stages/outputs.js';
import { pruneRoot, type PruneResult } from '../../src/stages/prune.js';
import type { TraceResult } from '../../src/stages/trace.js';
import type { TraceEvent } from '../../src/trace/parse-strace.js';
import { globToRegExp } from '../../src/root/glob.js';
import { debianDeb, extractDeb } from '../support/debian-inputs.js';

let work: string;
let root: string;
let result: PruneResult;
let config: LhcConfig;
const TRIPLET_DIR = '/usr/lib/aarch64-linux-gnu';

function ev(op: TraceEvent['op'], p: string, extra: Partial<TraceEvent> = {}): TraceEvent {
  return { pid: 1, op, path: p, result: 'ok', write: false, syscall: op, ...extra };
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'lhc-prune-'));
  root = path.join(work, 'root');
  const libc = await extractDeb(await debianDeb('libc6:arm64'), path.join(work, 'libc6'));
  const coreutils = await extractDeb(
    await debianDeb('coreutils:arm64'),
    path.join(work, 'coreutils'),
  );
  // Merged /usr, as Debian bookworm installs it: /bin and /lib are symlinks into /usr.
  await mkdir(path.join(root, 'usr/bin'), { recursive: true });
  await mkdir(path.join(root, 'usr/lib'), { recursive: true });
  await symlink('usr/bin', path.join(root, 'bin'));
  await symlink('usr/lib', path.join(root, 'lib'));
  await cp(path.join(libc, 'lib'), path.join(root, 'usr/lib'), {
    recursive: true,
    verbatimSymlinks: true,
  });
  await cp(path.join(libc, 'usr/lib'), path.join(root, 'usr/lib'), {
    recursive: true,
    verbatimSymlinks: true,
  });
  await cp(path.join(coreutils, 'bin'), path.join(root, 'usr/bin'), { recursive: true });
  await cp(path.join(coreutils, 'usr/share'), path.join(root, 'usr/share'), { recursive: true });
  // ls needs libselinux.so.1, which libc6 lacks: provide one (a real ELF, libm's bytes) only
  // through ld.so.conf.d, so finding it proves the include is followed.
  await mkdir(path.join(root, 'opt/lib'), { recursive: true });
  await cp(path.join(root, TRIPLET_DIR, 'libm.so.6'), path.join(root, 'opt/lib/libselinux.so.1'));
  await mkdir(path.join(root, 'etc/ld.so.conf.d'), { recursive: true });
  await writeFile(path.join(root, 'etc/ld.so.conf'), 'include /etc/ld.so.conf.d/*.conf\n');
  await writeFile(path.join(root, 'etc/ld.so.conf.d/opt.conf'), '# extra\n/opt/lib\n');
  await writeFile(path.join(root, 'etc/secret'), 'owned by 1234\n');
  await chown(path.join(root, 'etc/secret'), 1234, 5678);
  await chmod(path.join(root, 'etc/secret'), 0o640);
  await mkdir(path.join(root, 'srv/site'), { recursive: true });
  await chmod(path.join(root, 'srv/site'), 0o750);
  await writeFile(path.join(root, 'srv/site/index.txt'), 'index\n');
  await writeFile(path.join(root, 'srv/site/other.txt'), 'other\n');
  // A real ELF whose library (libJIS.so, next to it through RUNPATH $ORIGIN) is not in the root:
  // the service only lists its directory, so the library must not be looked for.
  await cp(path.join(root, TRIPLET_DIR, 'gconv/EUC-JP.so'), path.join(root, 'srv/site/plugin.so'));
  await symlink('/srv/site', path.join(root, 'srv/current'));
  await mkdir(path.join(root, 'data/cache'), { recursive: true });
  await writeFile(path.join(root, 'data/cache/seed'), 'seed\n');
  // A script the service runs: the kernel starts /bin/echo for it, which QEMU never logs.
  await writeFile(path.join(root, 'usr/bin/greet'), '#!/bin/echo hello\n');
  await chmod(path.join(root, 'usr/bin/greet'), 0o755);
  await mkdir(path.join(root, 'lhc-trace'));
  await mkdir(path.join(root, 'tmp'));
  await chmod(path.join(root, 'tmp'), 0o1777);

  config = resolveConfig(
    parseConfig(
      [
        'name: closure',
        'service: { command: [/bin/ls, /srv/current/], inetd: true }',
        'probes: [{ name: p, type: gopher, fixture: x }]',
        'keep: [/usr/share/doc/coreutils]',
        'drop: ["/**/*.gz"]',
      ].join('\n'),
    ),
    path.join(work, 'lhc.yml'),
  );
  const events: TraceEvent[] = [
    ev('exec', '/bin/ls', { syscall: 'entrypoint' }),
    ev('exec', '/lib/ld-linux-aarch64.so.1', { syscall: 'pt-interp' }),
    ev('open', '/etc/secret'),
    ev('exec', '/usr/bin/greet'),
    ev('open', '/srv/current/', { syscall: 'openat' }),
    ev('getdents', '/srv/current'),
    ev('stat', '/srv/current/index.txt', { noFollow: true }),
    ev('open', '/etc/missing', { result: 'error', errno: 2 }),
    ev('open', '/data/cache/seed'),
    ev('open', '/lhc-trace/qemu.log', { write: true }),
    ev('open', '/proc/self/maps'),
  ];
  const trace: TraceResult = {
    events,
    responses: {},
    writtenUnderData: [],
    writtenOutsideData: [],
    failedLookups: ['/etc/missing'],
    entrypoint: '/bin/ls',
    interp: '/lib/ld-linux-aarch64.so.1',
    emulated: true,
    seconds: 1.5,
    traceFiles: [],
  };
  result = await pruneRoot(root, trace, config, {
    outDir: path.join(work, 'out'),
    logger: memoryLogger(),
  });
}, 600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const why = (p: string) => result.report.kept.list.find((k) => k.path === p)?.why;
const out = (p: string) => path.join(result.prunedRoot, p);

describe('prune closure', () => {
  it('keeps the entrypoint through the /bin symlink, with the symlink itself', async () => {
    expect(why('/bin')).toContain('symlink-on-path');
    expect(await readlink(out('/bin'))).toBe('usr/bin');
    expect(why('/usr/bin/ls')).toContain('entrypoint');
    expect((await lstat(out('/usr/bin/ls'))).mode & 0o777).toBe(
      (await lstat(path.join(root, 'usr/bin/ls'))).mode & 0o777,
    );
  });

  it("keeps the interpreter and every DT_NEEDED library, transitively, found in the root's own dirs", async () => {
    const ls = await readElf(path.join(root, 'usr/bin/ls'));
    expect(ls?.needed).toContain('libselinux.so.1');
    // The interpreter is a symlink chain: /lib -> usr/lib, ld-linux-aarch64.so.1 -> aarch64-linux-gnu/...
    expect(why('/lib')).toContain('symlink-on-path');
    expect(why('/usr/lib/ld-linux-aarch64.so.1')).toContain('symlink-on-path');
    expect(why(`${TRIPLET_DIR}/ld-linux-aarch64.so.1`)).toEqual(
      expect.arrayContaining(['elf-interp']),
    );
    expect(why(`${TRIPLET_DIR}/libc.so.6`)).toContain('dt-needed');
    // Through /etc/ld.so.conf's include of ld.so.conf.d/*.conf.
    expect(why('/opt/lib/libselinux.so.1')).toContain('dt-needed');
    expect(result.report.missingLibraries).toEqual([]);
    // libm is only needed under the libselinux name; its own file and unrelated binaries are dropped.
    expect(existsSync(out(`${TRIPLET_DIR}/libm.so.6`))).toBe(false);
    expect(existsSync(out('/usr/bin/cat'))).toBe(false);
    expect(existsSync(out('/usr/bin/sh'))).toBe(false);
  });

  it("keeps a listed directory's entries and the symlink the service went through", async () => {
    expect(await readlink(out('/srv/current'))).toBe('/srv/site');
    expect(why('/srv/site/other.txt')).toEqual(['dir-listing']);
    // Listed, never loaded: kept by name, its DT_NEEDED (libJIS.so) not required.
    expect((await readElf(out('/srv/site/plugin.so')))?.needed).toContain('libJIS.so');
    expect(why('/srv/site/plugin.so')).toEqual(['dir-listing']);
    expect(result.report.missingLibraries).toEqual([]);
    expect(why('/srv/site')).toEqual(expect.arrayContaining(['traced-open', 'parent-dir']));
    expect((await lstat(out('/srv/site'))).mode & 0o7777).toBe(0o750);
  });

  it('preserves owner and mode', async () => {
    const st = await lstat(out('/etc/secret'));
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([1234, 5678, 0o640]);
    expect(why('/etc')).toEqual(['parent-dir']);
  });

  it('applies keep minus drop', async () => {
    const docs = await readdir(path.join(root, 'usr/share/doc/coreutils'));
    expect(docs.some((f) => f.endsWith('.gz'))).toBe(true);
    for (const f of docs) {
      expect(existsSync(out(`/usr/share/doc/coreutils/${f}`))).toBe(!f.endsWith('.gz'));
    }
    expect(result.report.droppedByConfig.length).toBe(docs.filter((f) => f.endsWith('.gz')).length);
  });

  it('puts the data path in the data template, never in the image; never includes /lhc-trace or /proc contents', async () => {
    expect(await readdir(out('/data'))).toEqual([]);
    expect(await readFile(path.join(result.dataDir, 'cache/seed'), 'utf8')).toBe('seed\n');
    expect(existsSync(out('/lhc-trace'))).toBe(false);
    expect(await readdir(out('/proc'))).toEqual([]);
  });

  it('creates every mount point as a directory; /tmp keeps its sticky mode', async () => {
    for (const m of ['/data', '/proc', '/sys', '/dev', '/run', '/tmp', '/usr']) {
      expect((await lstat(out(m))).isDirectory(), m).toBe(true);
      expect(why(m)).toContain('mount-point');
    }
    expect((await lstat(out('/tmp'))).mode & 0o7777).toBe(0o1777);
  });

  it('never keeps failed lookups, and reports them', () => {
    expect(existsSync(out('/etc/missing'))).toBe(false);
    expect(result.report.failedLookups).toEqual(['/etc/missing']);
  });

  it('reports every kept entry with a reason, and kept + dropped = base', async () => {
    const r = result.report;
    for (const k of r.kept.list) expect(k.why.length, k.path).toBeGreaterThan(0);
    expect(r.kept.entries + r.dropped.entries).toBe(
      r.base.entries +
        r.kept.list.filter(
          (k) => k.why.includes('mount-point') && !existsSync(path.join(root, k.path)),
        ).length,
    );
    expect(r.kept.bytes + r.dropped.bytes).toBe(r.base.bytes);
    expect(r.kept.bytes).toBeLessThan(r.base.bytes / 2);
    const file = path.join(work, 'report.json');
    await writeTraceReport(r, file);
    const json = JSON.parse(await readFile(file, 'utf8')) as {
      kept: { list: { path: string; why: string[] }[] };
      summary: string;
    };
    expect(json.kept.list.find((k) => k.path === '/opt/lib/libselinux.so.1')?.why).toEqual([
      'dt-needed',
    ]);
    expect(json.summary).toBe(summarizeReport(r));
    expect(summarizeReport(r)).toMatch(/^pruned closure: kept \d+ of \d+ entries/);
  });
});

describe('scripts', () => {
  it('keeps the #! interpreter of an executed script, with its own ELF closure', () => {
    expect(why('/usr/bin/greet')).toContain('traced-exec');
    expect(why('/usr/bin/echo')).toContain('shebang-interp');
    expect(existsSync(out('/usr/bin/echo'))).toBe(true);
  });
});

describe('keep/drop globs', () => {
  it('matches components, subtrees, classes and alternatives', () => {
    const m = (g: string, p: string) => globToRegExp(g).test(p);
    expect(m('/gopher', '/gopher/moon/x.txt')).toBe(true);
    expect(m('/gopher/', '/gopher')).toBe(true);
    expect(m('/gopher', '/gophers')).toBe(false);
    expect(m('/etc/*.conf', '/etc/a.conf')).toBe(true);
    expect(m('/etc/*.conf', '/etc/d/a.conf')).toBe(false);
    expect(m('/etc/*.d', '/etc/ld.so.conf.d/x.conf')).toBe(true);
    expect(m('/**/*.gz', '/usr/share/doc/x/changelog.gz')).toBe(true);
    expect(m('/**/*.gz', '/a.gz')).toBe(true);
    expect(m('/usr/lib/{libc,libm}.so.?', '/usr/lib/libm.so.6')).toBe(true);
    expect(m('/bin/[!s]h', '/bin/sh')).toBe(false);
    expect(m('/bin/[!s]h', '/bin/zh')).toBe(true);
    expect(() => globToRegExp('**/*.gz')).toThrow(/must be an absolute path/);
  });
});
