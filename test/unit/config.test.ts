import { checkConfigFiles, RECORD_FIXTURES_HINT } from '../../src/config/check-files.js';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';

/** A complete, valid config in the shape of the gophermoon example. Line numbers matter below. */
const EXAMPLE = `name: gophermoon
arch: aarch64
epoch: 1700000000
lua:
  version: "5.4.4"
  sha256: 164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61
  urls:
    - https://www.lua.org/ftp/lua-5.4.4.tar.gz
base:
  type: scratch
files:
  - src: gophermoon.lua
    dst: /bin/gophermoon
    mode: "0755"
data:
  path: /data
  template: data
service:
  command: [/bin/lua, /bin/gophermoon]
  inetd: true
probes:
  - name: root-menu
    type: gopher
    selector: ""
    fixture: fixtures/root.gopher
keep:
  - /gopher/**
outputs:
  dir: out
`;

/** Replaces exactly one occurrence, so a typo in a test cannot leave the config unchanged. */
function edit(from: string | RegExp, to: string): string {
  const out = EXAMPLE.replace(from, to);
  if (out === EXAMPLE) throw new Error(`test bug: ${String(from)} not found in the example`);
  return out;
}

function configError(text: string): ConfigError {
  try {
    parseConfig(text);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected the config to be rejected');
}

describe('a valid config', () => {
  it('parses with its values and defaults', () => {
    const c = parseConfig(EXAMPLE);
    expect(c.name).toBe('gophermoon');
    expect(c.lua).toEqual({
      version: '5.4.4',
      sha256: '164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61',
      urls: ['https://www.lua.org/ftp/lua-5.4.4.tar.gz'],
      strategy: 'cross',
      path: '/bin/lua',
    });
    expect(c.files).toEqual([{ src: 'gophermoon.lua', dst: '/bin/gophermoon', mode: 0o755 }]);
    expect(c.service).toMatchObject({
      user: 0,
      env: {},
      inetd: true,
      timeout: 60,
      limits: { memory: 256 * 1024 ** 2, tasks: 64, cpu: 100, nofile: 1024 },
    });
    expect(c.probes).toEqual([
      { name: 'root-menu', type: 'gopher', selector: '', fixture: 'fixtures/root.gopher' },
    ]);
    expect(c.drop).toEqual([]);
  });

  it('resolves relative paths against the config file when loaded', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-config-'));
    try {
      await writeFile(path.join(dir, 'lhc.yml'), EXAMPLE);
      const c = await loadConfig(path.join(dir, 'lhc.yml'));
      expect(c.file).toBe(path.join(dir, 'lhc.yml'));
      expect(c.files[0]!.src).toBe(path.join(dir, 'gophermoon.lua'));
      expect(c.data.template).toBe(path.join(dir, 'data'));
      expect(c.probes[0]!.fixture).toBe(path.join(dir, 'fixtures/root.gopher'));
      expect(c.outputs.dir).toBe(path.join(dir, 'out'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads service.limits with K/M/G memory sizes, defaults for what is not given', () => {
    const c = parseConfig(
      edit('inetd: true', 'inetd: true\n  limits:\n    memory: 1G\n    tasks: 20'),
    );
    expect(c.service.limits).toEqual({ memory: 1024 ** 3, tasks: 20, cpu: 100, nofile: 1024 });
    expect(
      parseConfig(edit('inetd: true', 'inetd: true\n  limits: { memory: 65536K }')).service.limits
        .memory,
    ).toBe(64 * 1024 ** 2);
  });

  it('reads an unquoted YAML mode (decimal 755 to YAML) as the octal mode written', () => {
    expect(parseConfig(edit('mode: "0755"', 'mode: 0755')).files[0]!.mode).toBe(0o755);
    expect(parseConfig(edit('mode: "0755"', 'mode: 644')).files[0]!.mode).toBe(0o644);
  });

  it('reads a YAML 1.2 octal mode (0o644) as that mode, not as the decimal digits of 420', () => {
    expect(parseConfig(edit('mode: "0755"', 'mode: 0o644')).files[0]!.mode).toBe(0o644);
  });

  it('refuses a numeric mode whose digits cannot be octal', () => {
    expect(() => parseConfig(edit('mode: "0755"', 'mode: 999'))).toThrow(
      'files[0].mode: expected an octal mode such as "0755" (quote it) (lhc.yml:14)',
    );
  });
});

describe('every example config validates', () => {
  const examplesDir = path.resolve(import.meta.dirname, '../../examples');
  let dirs: string[] = [];
  beforeAll(async () => {
    const entries = existsSync(examplesDir)
      ? await readdir(examplesDir, { withFileTypes: true })
      : [];
    dirs = entries.filter((e) => e.isDirectory()).map((e) => path.join(examplesDir, e.name));
  });
  it('examples/*/lhc.yml', async () => {
    for (const dir of dirs) {
      const file = path.join(dir, 'lhc.yml');
      expect(existsSync(file), `${file} is missing`).toBe(true);
      const c = await loadConfig(file);
      expect(c.name).toMatch(/^[a-z0-9-]+$/);
    }
  });
});

describe('broken configs name the field and the line', () => {
  const cases: [string, string, string][] = [
    [
      'sha256 one character short',
      edit(
        /sha256: 164c\S+/,
        'sha256: 164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf6',
      ),
      'lua.sha256: expected 64 hex characters (lhc.yml:6)',
    ],
    [
      'unsupported Lua version',
      edit('"5.4.4"', '"6.0"'),
      'lua.version: expected a Lua 5.3.x or 5.4.x version such as "5.4.4" (lhc.yml:5)',
    ],
    ['misspelt top-level key', edit('epoch:', 'epoc:'), 'epoc: unknown key (lhc.yml:3)'],
    ['misspelt nested key', edit('  urls:', '  url:'), 'lua.url: unknown key (lhc.yml:7)'],
    [
      'unknown arch',
      edit('arch: aarch64', 'arch: armv7'),
      'arch: Invalid option: expected one of "aarch64"|"x86_64" (lhc.yml:2)',
    ],
    [
      'unknown base type',
      edit('type: scratch', 'type: alpine'),
      "base.type: Invalid discriminator value. Expected 'scratch' | 'tarball' | 'debian' (lhc.yml:10)",
    ],
    [
      'ftp URL',
      edit('https://www.lua.org', 'ftp://www.lua.org'),
      'lua.urls[0]: expected an http(s):// or file:// URL (lhc.yml:8)',
    ],
    [
      'relative destination',
      edit('dst: /bin/gophermoon', 'dst: bin/gophermoon'),
      'files[0].dst: expected an absolute path without ".." (lhc.yml:13)',
    ],
    [
      'mode that is not octal',
      edit('mode: "0755"', 'mode: "0999"'),
      'files[0].mode: expected an octal mode such as "0755" (lhc.yml:14)',
    ],
    [
      'relative entrypoint',
      edit('[/bin/lua,', '[lua,'),
      'service.command[0]: the entrypoint must be an absolute path in the image (lhc.yml:19)',
    ],
    [
      'both inetd and listen',
      edit('inetd: true', 'inetd: true\n  listen: 70'),
      'service.inetd: set exactly one of inetd: true or listen: PORT (lhc.yml:20)',
    ],
    [
      'socket-activation on an inetd service',
      edit('inetd: true', 'inetd: true\n  socket-activation: true'),
      'service.socket-activation: socket-activation passes a listening socket to the daemon: it needs listen: PORT (an inetd service already gets its connection on stdin) (lhc.yml:21)',
    ],
    [
      'port out of range',
      edit('inetd: true', 'listen: 70000'),
      'service.listen: Too big: expected number to be <=65535 (lhc.yml:20)',
    ],
    [
      'memory limit without a unit it knows',
      edit('inetd: true', 'inetd: true\n  limits:\n    memory: 256MB'),
      'service.limits.memory: expected a size such as "256M" (K, M or G) or a number of bytes (lhc.yml:22)',
    ],
    [
      'memory limit too small for QEMU',
      edit('inetd: true', 'inetd: true\n  limits:\n    memory: 1M'),
      'service.limits.memory: at least 16M: QEMU and nspawn alone need about that (lhc.yml:22)',
    ],
    [
      'misspelt limit',
      edit('inetd: true', 'inetd: true\n  limits:\n    procs: 10'),
      'service.limits.procs: unknown key (lhc.yml:22)',
    ],
    [
      'success-exit-status on a listening service',
      edit('inetd: true', 'listen: 70\n  success-exit-status: [1]'),
      'service.success-exit-status: only for inetd services (service.inetd: true): a listening service is not restarted per connection (lhc.yml:21)',
    ],
    [
      'success-exit-status out of range',
      edit('inetd: true', 'inetd: true\n  success-exit-status: [1, 256]'),
      'service.success-exit-status[1]: Too big: expected number to be <=255 (lhc.yml:21)',
    ],
    [
      'success-exit-status not a list of integers',
      edit('inetd: true', 'inetd: true\n  success-exit-status: [1.5]'),
      'service.success-exit-status[0]: Invalid input: expected int, received number (lhc.yml:21)',
    ],
    [
      'missing service command',
      edit('  command: [/bin/lua, /bin/gophermoon]\n', ''),
      'service.command: required (lhc.yml:19)',
    ],
    [
      'unknown probe type',
      edit('type: gopher', 'type: ftp'),
      "probes[0].type: Invalid discriminator value. Expected 'gopher' | 'http' | 'tcp' (lhc.yml:23)",
    ],
    [
      'probe name with a space',
      edit('name: root-menu', 'name: root menu'),
      'probes[0].name: expected a name of letters, digits, ".", "_" or "-" (lhc.yml:22)',
    ],
    [
      'no probes',
      edit(/probes:[\s\S]*?keep:/, 'probes: []\nkeep:'),
      'probes: Too small: expected array to have >=1 items (lhc.yml:21)',
    ],
    [
      'tarball by URL without sha256',
      edit('type: scratch', 'type: tarball\n  urls: [https://example.org/root.tar.gz]'),
      'base.sha256: required with urls (lhc.yml:10)',
    ],
    [
      'bad Debian package name',
      edit('type: scratch', 'type: debian\n  packages: [Nginx]'),
      'base.packages[0]: expected a Debian package name (lhc.yml:11)',
    ],
    [
      'name that is not a unit name',
      edit('name: gophermoon', 'name: Gopher_Moon'),
      'name: expected lower-case letters, digits and "-" (a unit name) (lhc.yml:1)',
    ],
    [
      'duplicate key',
      edit('arch: aarch64', 'arch: aarch64\narch: x86_64'),
      'YAML syntax: Map keys must be unique (lhc.yml:3)',
    ],
    ['not a mapping', '- a\n- b\n', '(top level): expected a mapping of settings (lhc.yml:1)'],
    [
      'an output named like SHA256SUMS',
      edit('  dir: out', '  dir: out\n  image: SHA256SUMS'),
      'outputs.image: that name is taken by SHA256SUMS, deploy/, the trace report or the exposure scores (lhc.yml:30)',
    ],
    [
      'two outputs with one file name',
      edit('  dir: out', '  dir: out\n  image: a.img\n  manifest: a.img'),
      'outputs.manifest: "a.img" names two outputs (lhc.yml:31)',
    ],
    [
      'two probes with one name',
      edit(
        '    fixture: fixtures/root.gopher\n',
        '    fixture: fixtures/root.gopher\n  - name: root-menu\n    type: gopher\n    fixture: fixtures/other.gopher\n',
      ),
      'probes[1].name: duplicate probe name "root-menu" (also probes[0]) (lhc.yml:26)',
    ],
  ];

  it.each(cases)('%s', (_what, text, message) => {
    const e = configError(text);
    expect(e.message).toBe(message);
    expect(e.exitCode).toBe(2);
  });

  it('reports every problem, not just the first', () => {
    const e = configError(edit('arch: aarch64', 'arch: armv7\nnmae: x'));
    expect(e.message.split('\n')).toEqual([
      'arch: Invalid option: expected one of "aarch64"|"x86_64" (lhc.yml:2)',
      'nmae: unknown key (lhc.yml:3)',
    ]);
  });

  it('files the config names must exist: each unreadable one is named with its field', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-config-files-'));
    try {
      await writeFile(path.join(dir, 'lhc.yml'), EXAMPLE);
      await writeFile(path.join(dir, 'gophermoon.lua'), 'print(1)\n');
      const c = await loadConfig(path.join(dir, 'lhc.yml'));
      const e = await checkConfigFiles(c).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).message.split('\n')).toEqual([
        `data.template: cannot read ${path.join(dir, 'data')} (ENOENT)`,
        `probes[0].fixture: cannot read ${path.join(dir, 'fixtures/root.gopher')} (ENOENT); ${RECORD_FIXTURES_HINT}`,
      ]);
      // A fixture about to be recorded may be missing; the data template still may not.
      const again = await checkConfigFiles(c, { updateFixtures: true }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((again as ConfigError).message.split('\n')).toEqual([
        `data.template: cannot read ${path.join(dir, 'data')} (ENOENT)`,
      ]);
      await mkdir(path.join(dir, 'data'));
      await expect(checkConfigFiles(c, { updateFixtures: true })).resolves.toBeUndefined();
      await expect(checkConfigFiles(c)).rejects.toThrow(/--update-fixtures/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a missing file is a config error naming the file', async () => {
    await expect(loadConfig('/nonexistent/lhc.yml')).rejects.toThrow(ConfigError);
    await expect(loadConfig('/nonexistent/lhc.yml')).rejects.toThrow(/\/nonexistent\/lhc\.yml/);
  });
});

let tmpRoot: string;
beforeAll(async () => {
  tmpRoot = await mkdtemp(path.join(os.tmpdir(), 'lhc-config-file-'));
});
afterAll(async () => {
  await rm(tmpRoot, { recursive: true, force: true });
});

it('messages use the config file name', async () => {
  const file = path.join(tmpRoot, 'board.yml');
  await writeFile(file, edit(/sha256: 164c\S+/, 'sha256: xyz'));
  await expect(loadConfig(file)).rejects.toThrow(
    'lua.sha256: expected 64 hex characters (board.yml:6)',
  );
});

describe('prepare (formerly packages)', () => {
  const base = `name: t\nservice: {command: [/bin/x], inetd: true}\nprobes: [{name: a, type: gopher, fixture: a.txt}]\nbase: {type: tarball, path: r.tar}\n`;

  it('the old key still works, as prepare, with a warning', async () => {
    const { resolveConfig, PACKAGES_RENAMED } = await import('../../src/config/load.js');
    const c = resolveConfig(parseConfig(`${base}packages: apk add nginx\n`), '/p/lhc.yml');
    expect(c.prepare).toBe('apk add nginx');
    expect(c.warnings).toEqual([PACKAGES_RENAMED]);
    const n = resolveConfig(parseConfig(`${base}prepare: [apk, add, nginx]\n`), '/p/lhc.yml');
    expect(n.prepare).toEqual(['apk', 'add', 'nginx']);
    expect(n.warnings).toEqual([]);
  });

  it('both keys at once is an error naming packages and its line', () => {
    expect(() => parseConfig(`${base}prepare: "true"\npackages: "true"\n`)).toThrow(
      /packages: packages is the old name of prepare: give only prepare \(lhc\.yml:6\)/,
    );
  });
});
