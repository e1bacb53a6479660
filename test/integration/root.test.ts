/**
 * The root stage for real: an Alpine-shaped aarch64 rootfs (built from Debian arm64 packages)
 * extracted safely, a `prepare` command run in it by systemd-nspawn under QEMU, the overlay and
 * the data template; a scratch root nspawn accepts; and a Debian arm64 base with nginx-light
 * made by mmdebstrap (slow the first time; cached in $LHC_TEST_CACHE/bases).
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, parseConfig, type LhcConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { memoryLogger, type Logger } from '../../src/core/logger.js';
import { stageContext, type StageContext } from '../../src/core/stage.js';
import { readElf } from '../../src/elf/elf.js';
import { extractTarball } from '../../src/root/extract.js';
import { resolveInRoot } from '../../src/root/resolve.js';
import { assembleRoot, runInRoot, treeBytes } from '../../src/stages/root.js';
import { Store } from '../../src/store/store.js';
import { alpineLikeRootfs, testCacheDir, type AlpineLike } from '../support/alpine-like.js';
import { requireTool } from '../support/require-tool.js';

let tmp: string;
let store: Store;
let alpine: AlpineLike;

function config(yaml: string): LhcConfig {
  const text = `name: roottest\nservice:\n  command: [/bin/true]\n  inetd: true\nprobes:\n  - {name: p, type: gopher, fixture: f}\n${yaml}`;
  return resolveConfig(parseConfig(text), path.join(tmp, 'lhc.yml'));
}

function rootCtx(workDir: string, logger: Logger): StageContext {
  return stageContext({ logger, workDir, store });
}

async function workDir(name: string): Promise<string> {
  const d = path.join(tmp, name);
  await mkdir(d);
  return d;
}

beforeAll(async () => {
  await requireTool('systemd-nspawn', 'systemd-container');
  await requireTool('qemu-aarch64-static', 'qemu-user-static');
  await requireTool('xz', 'xz-utils');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-root-'));
  store = new Store(path.join(tmp, 'store'));
  alpine = await alpineLikeRootfs();
  // Overlay inputs: a file, a directory tree with a symlink, and a data template.
  await writeFile(path.join(tmp, 'motd'), 'welcome\n');
  await mkdir(path.join(tmp, 'site/sub'), { recursive: true });
  await writeFile(path.join(tmp, 'site/index.txt'), 'index\n');
  await writeFile(path.join(tmp, 'site/sub/run.sh'), '#!/bin/sh\necho run\n');
  await chmod(path.join(tmp, 'site/sub/run.sh'), 0o755);
  await symlink('/bin/busybox', path.join(tmp, 'site/bb'));
  await mkdir(path.join(tmp, 'tmpl/cache'), { recursive: true });
  await writeFile(path.join(tmp, 'tmpl/state.json'), '{}\n');
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('tarball base (Alpine-shaped, aarch64)', () => {
  it('extracts, runs prepare under QEMU in nspawn, overlays files and the data template', async () => {
    const cfg = config(`base: {type: tarball, path: ${alpine.gz}}
prepare: "mkdir -p /srv && echo hi > /srv/hello && uname -m > /srv/arch && cat /etc/resolv.conf > /srv/dns && echo streamed-line"
files:
  - {src: motd, dst: /etc/motd, mode: "0600"}
  - {src: site, dst: /var/www}
data: {path: /data, template: tmpl}
`);
    const logger = memoryLogger();
    const { root, baseBytes } = await assembleRoot(rootCtx(await workDir('alpine-gz'), logger), {
      config: cfg,
    });
    // The command really ran inside the aarch64 root.
    expect(readFileSync(path.join(root, 'srv/hello'), 'utf8')).toBe('hi\n');
    expect(readFileSync(path.join(root, 'srv/arch'), 'utf8')).toBe('aarch64\n');
    // It resolved names with the host's resolv.conf, which the root does not keep.
    expect(readFileSync(path.join(root, 'srv/dns'), 'utf8')).toBe(
      readFileSync('/etc/resolv.conf', 'utf8'),
    );
    expect(existsSync(path.join(root, 'etc/resolv.conf'))).toBe(false);
    // Its output reached the log at info level, as it ran.
    expect(logger.lines).toContain('  streamed-line');
    // Absolute applet symlinks survive verbatim.
    expect(readlinkSync(path.join(root, 'bin/sh'))).toBe('/bin/busybox');
    expect(readFileSync(path.join(root, 'etc/motd'), 'utf8')).toBe('welcome\n');
    expect(statSync(path.join(root, 'etc/motd')).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(root, 'var/www/index.txt'), 'utf8')).toBe('index\n');
    expect(statSync(path.join(root, 'var/www/sub/run.sh')).mode & 0o777).toBe(0o755);
    expect(readlinkSync(path.join(root, 'var/www/bb'))).toBe('/bin/busybox');
    expect(readFileSync(path.join(root, 'data/state.json'), 'utf8')).toBe('{}\n');
    expect(lstatSync(path.join(root, 'data/cache')).isDirectory()).toBe(true);
    for (const m of ['proc', 'sys', 'dev', 'run', 'tmp', 'usr'])
      expect(lstatSync(path.join(root, m)).isDirectory()).toBe(true);
    expect(baseBytes).toBe(treeBytes(root));
    expect(baseBytes).toBeGreaterThan(statSync(path.join(root, 'bin/busybox')).size);
    expect(logger.lines.join('\n')).toContain(`${alpine.applets + 1} symlinks`);
  });

  it('fetches an .xz rootfs through the store by sha256 and runs the deprecated argv packages command', async () => {
    const sha = createHash('sha256').update(readFileSync(alpine.xz)).digest('hex');
    const cfg = config(`base: {type: tarball, urls: ["file://${alpine.xz}"], sha256: "${sha}"}
packages: [/bin/busybox, touch, /etc/from-argv]
`);
    const logger = memoryLogger();
    const { root } = await assembleRoot(rootCtx(await workDir('alpine-xz'), logger), {
      config: cfg,
    });
    expect(existsSync(path.join(root, 'etc/from-argv'))).toBe(true);
    expect(logger.lines.join('\n')).toMatch(/^warning: packages: renamed to prepare/m);
    expect(await store.has(sha)).toBe(true);
    expect(resolveInRoot(root, '/bin/sh').inRoot).toBe('/bin/busybox');
  });

  it('refuses a local tarball whose sha256 does not match', async () => {
    const cfg = config(`base: {type: tarball, path: ${alpine.gz}, sha256: "${'0'.repeat(64)}"}\n`);
    const wd = await workDir('alpine-badsha');
    await expect(assembleRoot(rootCtx(wd, memoryLogger()), { config: cfg })).rejects.toThrow(
      /has sha256 [0-9a-f]{64}, but the config expects 0{64}/,
    );
    expect(existsSync(path.join(wd, 'root'))).toBe(false);
  });

  it('fails with the command output when prepare fails, leaving no half-built root', async () => {
    const cfg = config(
      `base: {type: tarball, path: ${alpine.gz}}\nprepare: "echo broken-step >&2; exit 3"\n`,
    );
    const wd = await workDir('alpine-fail');
    await expect(assembleRoot(rootCtx(wd, memoryLogger()), { config: cfg })).rejects.toThrow(
      /broken-step/,
    );
    expect(existsSync(path.join(wd, 'root'))).toBe(false);
  });
});

describe('scratch base', () => {
  it('is a root nspawn accepts, with mount points, the overlay and the data dir', async () => {
    // The static busybox as the only program, installed through the overlay.
    const cfg = config(
      `files:\n  - {src: ${path.join(tmp, 'busybox')}, dst: /bin/busybox, mode: "0755"}\ndata: {path: /srv/data}\n` +
        `lua: {version: "5.4.4", sha256: "${'a'.repeat(64)}", path: /usr/local/bin/lua}\n`,
    );
    const staging = await workDir('bb');
    await extractTarball(alpine.gz, path.join(staging, 'x'));
    await writeFile(path.join(tmp, 'busybox'), readFileSync(path.join(staging, 'x/bin/busybox')));
    // luaPath: any file stands in for the static Lua here; it must land at lua.path, executable.
    const { root } = await assembleRoot(rootCtx(await workDir('scratch'), memoryLogger()), {
      config: cfg,
      luaPath: path.join(tmp, 'busybox'),
    });
    const lua = path.join(root, 'usr/local/bin/lua');
    expect(readFileSync(lua).equals(readFileSync(path.join(tmp, 'busybox')))).toBe(true);
    expect(statSync(lua).mode & 0o777).toBe(0o755);
    for (const m of ['usr', 'proc', 'sys', 'dev', 'run', 'tmp', 'srv/data']) {
      expect(lstatSync(path.join(root, m)).isDirectory(), m).toBe(true);
    }
    expect(statSync(path.join(root, 'tmp')).mode & 0o7777).toBe(0o1777);
    expect(existsSync(path.join(root, 'bin/sh'))).toBe(false);
    const r = await runInRoot(root, ['/bin/busybox', 'uname', '-m'], { logger: memoryLogger() });
    expect(r.stdout).toBe('aarch64\n');
  });

  it('refuses prepare on scratch', async () => {
    const cfg = config(`prepare: "true"\n`);
    await expect(
      assembleRoot(rootCtx(await workDir('scratch-pk'), memoryLogger()), { config: cfg }),
    ).rejects.toBeInstanceOf(ConfigError);
  });
});

describe('debian base', () => {
  it('builds bookworm arm64 with nginx-light via mmdebstrap and extracts it safely', async () => {
    await requireTool('mmdebstrap', 'mmdebstrap');
    const cfg = config(`base: {type: debian, suite: bookworm, packages: [nginx-light]}\n`);
    const logger = memoryLogger();
    const { root, baseBytes } = await assembleRoot(rootCtx(await workDir('debian'), logger), {
      config: cfg,
      basesDir: path.join(testCacheDir(), 'bases'),
    });
    const nginx = await readElf(path.join(root, 'usr/sbin/nginx'));
    expect(nginx?.machineName).toBe('aarch64');
    expect(nginx?.interp).toBe('/lib/ld-linux-aarch64.so.1');
    // Merged /usr: /bin is a relative symlink kept verbatim; /bin/sh resolves inside the root.
    expect(resolveInRoot(root, '/bin/sh').inRoot).toMatch(/^\/usr\/bin\/(dash|sh)$/);
    expect(existsSync(path.join(root, 'etc/nginx/nginx.conf'))).toBe(true);
    expect(baseBytes).toBeGreaterThan(50 * 1024 * 1024);
    expect(logger.lines.join('\n')).toMatch(/skipped \d+ device nodes/);
  }, 1_800_000);
});
