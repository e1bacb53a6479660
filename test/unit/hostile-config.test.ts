/**
 * A corpus of hostile lhc.yml files, each driven through `lhc build` (and `lhc validate`) as the CLI
 * runs them. For every case: refused with exit code 2 and a message naming the field (and its line
 * where the config has one), no stack trace, no host file touched (checksums of a canary set), and
 * nothing left behind (no output dir, no temp or work dir).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { commands } from '../../src/cli/commands/index.js';
import { memoryLogger } from '../../src/core/logger.js';

let top: string;
/** The project: a directory holding lhc.yml, not inside any git work tree. */
let proj: string;
/** Files outside the project a hostile config aims at; their checksums must never change. */
let outside: string;
/** TMPDIR while lhc runs: must be empty afterwards. */
let tmpdir: string;

const HOST_CANARIES = ['/etc/passwd', '/etc/hostname', '/etc/hosts'];
let canaries: string[] = [];

function checksums(files: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of files)
    out[f] = existsSync(f) ? createHash('sha256').update(readFileSync(f)).digest('hex') : 'absent';
  return out;
}

async function lhc(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = tmpdir;
  try {
    const code = await main(argv, {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      logger: memoryLogger(),
      commands,
    });
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
}

const SERVICE = 'service: { command: [/bin/busybox, cat], inetd: true }\n';
const PROBE = 'probes: [{ name: p, type: gopher, fixture: ok.gopher }]\n';

interface Case {
  name: string;
  /** The config text (a function when it needs paths known only at run time). */
  yaml: string | (() => string);
  /** Project files the case needs, created before the run. */
  setup?: () => Promise<void>;
  /** The message must match (field first, as the user sees it). */
  error: RegExp;
}

const cases: Case[] = [
  {
    name: 'files[].src names a host secret by absolute path',
    yaml: `name: t\nfiles:\n  - { src: /etc/shadow, dst: /etc/shadow }\n${SERVICE}${PROBE}`,
    error: /^files\[0\]\.src: an absolute path \(\/etc\/shadow\).* \(lhc\.yml:3\)$/m,
  },
  {
    name: 'files[].src climbs out with ..',
    yaml: `name: t\nfiles:\n  - { src: ../outside/secret.txt, dst: /s }\n${SERVICE}${PROBE}`,
    error: /^files\[0\]\.src: .*outside\/secret\.txt is outside the project .* \(lhc\.yml:3\)$/m,
  },
  {
    name: 'files[].src is a symlink in the project pointing at a host file',
    yaml: `name: t\nfiles:\n  - { src: innocent.txt, dst: /s }\n${SERVICE}${PROBE}`,
    setup: () => symlink(path.join(outside, 'secret.txt'), path.join(proj, 'innocent.txt')),
    error:
      /^files\[0\]\.src: .*innocent\.txt \(which resolves to .*secret\.txt\) is outside the project/m,
  },
  {
    name: 'files[].src is a symlinked directory into /etc',
    yaml: `name: t\nfiles:\n  - { src: conf/passwd, dst: /p }\n${SERVICE}${PROBE}`,
    setup: () => symlink('/etc', path.join(proj, 'conf')),
    error:
      /^files\[0\]\.src: .*conf\/passwd \(which resolves to \/etc\/passwd\) is outside the project/m,
  },
  {
    name: "probe fixture /proc/self/environ (leaks lhc's environment into the diff)",
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: gopher, fixture: /proc/self/environ }\n`,
    error: /^probes\[0\]\.fixture: an absolute path \(\/proc\/self\/environ\).* \(lhc\.yml:4\)$/m,
  },
  {
    name: 'probe fixture is a symlink to /dev/zero (read forever)',
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: gopher, fixture: zero }\n`,
    setup: () => symlink('/dev/zero', path.join(proj, 'zero')),
    error:
      /^probes\[0\]\.fixture: .*zero \(which resolves to \/dev\/zero\) is outside the project .* \(lhc\.yml:4\)$/m,
  },
  {
    name: 'probe fixture is a symlink into /proc',
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: http, fixture: env }\n`,
    setup: () => symlink('/proc/self/environ', path.join(proj, 'env')),
    error: /^probes\[0\]\.fixture: .*env \(which resolves to \/proc\/\d+\/environ\) is outside/m,
  },
  {
    name: 'probe fixture is a FIFO in the project',
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: gopher, fixture: pipe }\n`,
    setup: async () => void execFileSync('mkfifo', [path.join(proj, 'pipe')]),
    error:
      /^probes\[0\]\.fixture: .*pipe is a FIFO; only regular files can be named \(lhc\.yml:4\)$/m,
  },
  {
    name: 'probe fixture larger than the 16 MiB cap',
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: gopher, fixture: big.gopher }\n`,
    setup: async () => {
      await writeFile(path.join(proj, 'big.gopher'), '');
      await truncate(path.join(proj, 'big.gopher'), 16 * 1024 * 1024 + 1);
    },
    error:
      /^probes\[0\]\.fixture: .*big\.gopher is 16777217 bytes, more than the cap of 16777216 bytes/m,
  },
  {
    name: 'files[].src larger than the 256 MiB cap (sparse)',
    yaml: `name: t\nfiles:\n  - { src: huge.bin, dst: /huge }\n${SERVICE}${PROBE}`,
    setup: async () => {
      await writeFile(path.join(proj, 'huge.bin'), '');
      await truncate(path.join(proj, 'huge.bin'), 256 * 1024 * 1024 + 1);
    },
    error: /^files\[0\]\.src: .*huge\.bin is 268435457 bytes, more than the cap/m,
  },
  {
    name: 'data.template names a file',
    yaml: `name: t\ndata: { template: ok.gopher }\n${SERVICE}${PROBE}`,
    error: /^data\.template: .*ok\.gopher is a file, expected a directory \(lhc\.yml:2\)$/m,
  },
  {
    name: 'data.template is a symlink to /etc',
    yaml: `name: t\ndata: { template: tmpl }\n${SERVICE}${PROBE}`,
    setup: () => symlink('/etc', path.join(proj, 'tmpl')),
    error: /^data\.template: .*tmpl \(which resolves to \/etc\) is outside the project/m,
  },
  {
    name: 'base.path is a symlink to a host file',
    yaml: `name: t\nbase: { type: tarball, path: root.tar }\n${SERVICE}${PROBE}`,
    setup: () => symlink('/etc/passwd', path.join(proj, 'root.tar')),
    error:
      /^base\.path: .*root\.tar \(which resolves to \/etc\/passwd\) is outside the project .* \(lhc\.yml:2\)$/m,
  },
  {
    name: 'lua.urls reads a host file through file://',
    yaml: `name: t\nlua:\n  version: "5.4.4"\n  sha256: ${'a'.repeat(64)}\n  urls: ["file:///etc/shadow"]\n${SERVICE}${PROBE}`,
    error: /^lua\.urls\[0\]: \/etc\/shadow is outside the project .* \(lhc\.yml:5\)$/m,
  },
  {
    name: 'base.urls reads a file outside the project through file://',
    yaml: () =>
      `name: t\nbase: { type: tarball, urls: ["file://${outside}/secret.txt"], sha256: ${'b'.repeat(64)} }\n${SERVICE}${PROBE}`,
    error: /^base\.urls\[0\]: .*secret\.txt is outside the project/m,
  },
  {
    name: 'a 300-character path component in files[].src (was ENAMETOOLONG)',
    yaml: `name: t\nfiles:\n  - { src: ${'a'.repeat(300)}, dst: /x }\n${SERVICE}${PROBE}`,
    error: /^files\[0\]\.src: a path component is longer than 255 bytes \(lhc\.yml:3\)$/m,
  },
  {
    name: 'a 300-character path component in files[].dst',
    yaml: `name: t\nfiles:\n  - { src: ok.gopher, dst: /${'b'.repeat(300)} }\n${SERVICE}${PROBE}`,
    error: /^files\[0\]\.dst: a path component is longer than 255 bytes \(lhc\.yml:3\)$/m,
  },
  {
    name: 'a 300-character outputs.dir component',
    yaml: `name: t\noutputs: { dir: ${'o'.repeat(300)} }\n${SERVICE}${PROBE}`,
    error: /^outputs\.dir: a path component is longer than 255 bytes \(lhc\.yml:2\)$/m,
  },
  {
    name: 'data.path: / (was EEXIST)',
    yaml: `name: t\ndata: { path: / }\n${SERVICE}${PROBE}`,
    error: /^data\.path: the data directory cannot be "\/", .* \(lhc\.yml:2\)$/m,
  },
  {
    name: 'data.path: /proc',
    yaml: `name: t\ndata: { path: /proc/ }\n${SERVICE}${PROBE}`,
    error: /^data\.path: the data directory cannot be/m,
  },
  {
    name: 'a newline in dst is called a newline, not ".."',
    yaml: `name: t\nfiles:\n  - { src: ok.gopher, dst: "/etc/x\\n/../y" }\n${SERVICE}${PROBE}`,
    error: /^files\[0\]\.dst: a path cannot contain a newline \(lhc\.yml:3\)$/m,
  },
  {
    name: 'a NUL byte in a fixture path',
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: gopher, fixture: "ok.gopher\\0/etc/shadow" }\n`,
    error: /^probes\[0\]\.fixture: a path cannot contain a NUL byte \(lhc\.yml:4\)$/m,
  },
  {
    name: 'a symlink loop as a fixture',
    yaml: `name: t\n${SERVICE}probes:\n  - { name: p, type: gopher, fixture: loop1 }\n`,
    setup: async () => {
      await symlink('loop2', path.join(proj, 'loop1'));
      await symlink('loop1', path.join(proj, 'loop2'));
    },
    error: /^probes\[0\]\.fixture: cannot read .*loop1 \(too many levels of symbolic links\)/m,
  },
  {
    name: 'a YAML alias bomb',
    yaml: [
      'a: &a ["x","x","x","x","x","x","x","x","x"]',
      'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
      'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
      'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
      'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
      'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
      'name: t',
      '',
    ].join('\n'),
    error: /^YAML aliases: the config expands more than 100 aliases \(lhc\.yml:1\)/m,
  },
  {
    name: 'a config over 1 MiB (was: JavaScript heap out of memory at 49 MB)',
    yaml: `name: t\n${SERVICE}${PROBE}# ${'x'.repeat(1024 * 1024)}\n`,
    error:
      /^cannot read config .*lhc\.yml: \d+ bytes, more than the cap of 1048576 bytes \(1 MiB\)$/m,
  },
  {
    name: 'the config is a symlink to a FIFO',
    yaml: '',
    setup: async () => {
      await rm(path.join(proj, 'lhc.yml'), { force: true });
      execFileSync('mkfifo', [path.join(proj, 'fifo')]);
      await symlink('fifo', path.join(proj, 'lhc.yml'));
    },
    error: /^cannot read config .*lhc\.yml: not a regular file$/m,
  },
];

beforeAll(async () => {
  top = await mkdtemp(path.join(os.tmpdir(), 'lhc-hostile-'));
  outside = path.join(top, 'outside');
  await mkdir(outside);
  await writeFile(path.join(outside, 'secret.txt'), 'the runner token\n');
  canaries = [...HOST_CANARIES, path.join(outside, 'secret.txt')];
});
afterAll(async () => {
  await rm(top, { recursive: true, force: true });
});

describe('hostile configs are refused with the field named, touching nothing', () => {
  let n = 0;
  for (const c of cases) {
    it(c.name, async () => {
      proj = path.join(top, `proj-${n}`);
      tmpdir = path.join(top, `tmp-${n++}`);
      await mkdir(proj);
      await mkdir(tmpdir);
      await writeFile(path.join(proj, 'ok.gopher'), 'ok\r\n.\r\n');
      const yaml = typeof c.yaml === 'function' ? c.yaml() : c.yaml;
      if (yaml) await writeFile(path.join(proj, 'lhc.yml'), yaml);
      // A socket lives as long as its server: keep one in every project, unrelated to the case.
      const sock = net.createServer();
      await new Promise<void>((r) => sock.listen(path.join(proj, 'ctl.sock'), r));
      try {
        await c.setup?.();
        const before = checksums(canaries);
        const projBefore = (await readdir(proj)).sort();
        const out = path.join(proj, 'out');
        for (const argv of [
          ['build', path.join(proj, 'lhc.yml'), '--out', out],
          ['validate', path.join(proj, 'lhc.yml')],
        ]) {
          const r = await lhc(argv);
          expect(r.code, `${argv[0]}: ${r.err}`).toBe(2);
          expect(r.err.replace(/^error: /, '')).toMatch(c.error);
          expect(r.err, 'no stack trace').not.toMatch(/\n\s+at .*:\d+:\d+/);
          expect(r.err.length, 'the message is short').toBeLessThan(2000);
        }
        expect(checksums(canaries)).toEqual(before);
        expect((await readdir(proj)).sort(), 'nothing created in the project').toEqual(projBefore);
        expect(await readdir(tmpdir), 'no temp or work dir left').toEqual([]);
      } finally {
        await new Promise((r) => sock.close(r));
      }
    });
  }
});

describe('paths that stay in the project are accepted', () => {
  it('a socket in the project is refused like a FIFO', async () => {
    proj = path.join(top, 'sock');
    tmpdir = path.join(top, 'tmp-sock');
    await mkdir(proj);
    await mkdir(tmpdir);
    await writeFile(
      path.join(proj, 'lhc.yml'),
      `name: t\n${SERVICE}probes: [{ name: p, type: gopher, fixture: s.sock }]\n`,
    );
    const sock = net.createServer();
    await new Promise<void>((r) => sock.listen(path.join(proj, 's.sock'), r));
    try {
      const r = await lhc(['validate', path.join(proj, 'lhc.yml')]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(
        /probes\[0\]\.fixture: .*s\.sock is a socket; only regular files can be named \(lhc\.yml:3\)/,
      );
    } finally {
      await new Promise((r) => sock.close(r));
    }
  });

  it('in a git work tree, a config may name files elsewhere in that tree, but not above it', async () => {
    const repo = path.join(top, 'repo');
    await mkdir(path.join(repo, '.git'), { recursive: true });
    await mkdir(path.join(repo, 'examples/svc'), { recursive: true });
    await mkdir(path.join(repo, 'fixtures'), { recursive: true });
    await writeFile(path.join(repo, 'fixtures/root.gopher'), 'ok\r\n.\r\n');
    await writeFile(path.join(repo, 'examples/svc/main.lua'), 'print(1)\n');
    // Inside the tree through a symlink is fine too: what counts is where it resolves.
    await symlink('../../fixtures', path.join(repo, 'examples/svc/fx'));
    const cfg = path.join(repo, 'examples/svc/lhc.yml');
    await writeFile(
      cfg,
      `name: t\nfiles: [{ src: main.lua, dst: /main.lua }]\n${SERVICE}probes:\n` +
        '  - { name: a, type: gopher, fixture: ../../fixtures/root.gopher }\n' +
        '  - { name: b, type: gopher, fixture: fx/root.gopher }\n',
    );
    tmpdir = path.join(top, 'tmp-repo');
    await mkdir(tmpdir);
    const ok = await lhc(['validate', cfg]);
    expect(ok.err).toBe('');
    expect(ok.code).toBe(0);

    await writeFile(path.join(top, 'above.gopher'), 'x');
    await writeFile(
      cfg,
      `name: t\n${SERVICE}probes:\n  - { name: a, type: gopher, fixture: ../../../above.gopher }\n`,
    );
    const bad = await lhc(['validate', cfg]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain(`is outside the project ${repo} (lhc.yml:4)`);
  });
});
