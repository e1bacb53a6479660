/**
 * trace → prune → self-check for real: services run in systemd-nspawn under QEMU (aarch64 on this
 * host), traced through QEMU_STRACE, pruned to what the trace proves, then replayed read-only on
 * the pruned root. Roots: a busybox-static:arm64 directory root (inetd and listening services),
 * gophermoon on scratch with the static Lua lhc builds, and nginx on a Debian arm64 base.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { UserError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext, type StageContext } from '../../src/core/stage.js';
import { buildLua } from '../../src/stages/lua.js';
import { writeTraceReport } from '../../src/stages/outputs.js';
import { pruneRoot } from '../../src/stages/prune.js';
import { assembleRoot } from '../../src/stages/root.js';
import { selfCheck } from '../../src/stages/self-check.js';
import { hostArch } from '../../src/core/arch.js';
import { traceService, type TraceResult } from '../../src/stages/trace.js';
import { Store } from '../../src/store/store.js';
import { resolveTraced } from '../../src/root/lookup.js';
import { busyboxRoot } from '../support/busybox-root.js';
import { LUA_SOURCES, luaSourceTarball, testCacheDir } from '../support/debian-inputs.js';
import { requireTool } from '../support/require-tool.js';

const REPO = path.resolve(import.meta.dirname, '../..');
let tmp: string;
let bbRoot: string;

/** A config file in its own dir (fixture paths are not read by the trace). */
async function config(name: string, yaml: string): Promise<LhcConfig> {
  const dir = path.join(tmp, 'configs', name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'lhc.yml'), `name: ${name}\n${yaml}`);
  return loadConfig(path.join(dir, 'lhc.yml'));
}

/** A stage context whose work dir is `dir`. */
function ctxAt(dir: string, store?: Store): StageContext {
  return stageContext({ logger: memoryLogger(), workDir: dir, ...(store ? { store } : {}) });
}

/** Processes and mounts this file's runs could leave behind. */
function leftovers(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(tmp) && !cmd.includes('vitest')) found.push(`process ${pid}: ${cmd}`);
    } catch {
      // gone
    }
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line.split(' ')[4]?.startsWith(tmp)) found.push(`mount: ${line}`);
  }
  return found;
}

/** What the trace proves: every successful (or unknown) lookup, resolved in the root. */
function provenByTrace(root: string, trace: TraceResult): Set<string> {
  const proven = new Set<string>();
  for (const e of trace.events) {
    if (e.result === 'error' && (e.errno === 2 || e.errno === 20)) continue;
    const r = resolveTraced(root, e.path, { noFollow: e.noFollow ?? false });
    for (const l of r.symlinks) proven.add(l.path);
    if (r.exists) proven.add(r.inRoot);
  }
  return proven;
}

beforeAll(async () => {
  if (process.getuid?.() !== 0)
    throw new Error('trace-prune integration tests need root (systemd-nspawn, mount)');
  for (const tool of ['systemd-nspawn', 'qemu-aarch64-static', 'nsenter', 'curl', 'mkfifo'])
    await requireTool(tool);
  if (!existsSync('/proc/sys/fs/binfmt_misc/qemu-aarch64')) {
    throw new Error(
      'binfmt_misc has no qemu-aarch64 entry: install qemu-user-static and run `lhc setup`',
    );
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-trace-prune-'));
  bbRoot = await busyboxRoot(path.join(tmp, 'busybox-root'));
}, 600_000);

afterEach(() => {
  expect(leftovers()).toEqual([]);
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('busybox root, inetd service', () => {
  let cfg: LhcConfig;
  let trace: TraceResult;

  beforeAll(async () => {
    cfg = await config(
      'bb-cat',
      'service: { command: [/bin/busybox, cat, /srv/hello], inetd: true }\nprobes:\n  - { name: hello, type: gopher, selector: "", fixture: x }\n  - { name: again, type: gopher, selector: "/again", fixture: x }\n',
    );
    trace = await traceService(ctxAt(path.join(tmp, 'w-cat')), { config: cfg, root: bbRoot });
  }, 300_000);

  it('answers every probe with what the service printed, and records the file it opened', async () => {
    const hello = await readFile(path.join(bbRoot, 'srv/hello'));
    expect(trace.responses.hello!.body).toEqual(hello);
    expect(trace.responses.again!.body).toEqual(hello);
    expect(trace.emulated).toBe(hostArch() !== 'aarch64');
    expect(
      trace.events.filter((e) => e.op === 'open' && e.path === '/srv/hello' && e.result === 'ok'),
    ).toHaveLength(2);
    // The traced copy is gone; the trace mount point never touched the real root.
    expect(existsSync(path.join(tmp, 'w-cat/trace/trace-root'))).toBe(false);
    expect(existsSync(path.join(bbRoot, 'lhc-trace'))).toBe(false);
  });

  it('prunes to exactly what the trace proves plus the closure; no shell; self-check passes', async () => {
    const out = path.join(tmp, 'p-cat');
    const { prunedRoot, report, dataDir } = await pruneRoot(ctxAt(out), {
      root: bbRoot,
      trace,
      config: cfg,
    });
    await writeTraceReport(report, path.join(out, 'trace-report.json'));
    const proven = provenByTrace(bbRoot, trace);
    const mounts = new Set(['/data', '/proc', '/sys', '/dev', '/run', '/tmp', '/usr']);
    for (const k of report.kept.list) {
      const parentOfProven = [...proven].some((p) => p.startsWith(`${k.path}/`));
      expect(
        proven.has(k.path) || mounts.has(k.path) || parentOfProven,
        `${k.path} (${k.why.join(',')})`,
      ).toBe(true);
    }
    for (const p of proven)
      if (!p.startsWith('/proc') && !p.startsWith('/dev'))
        expect(existsSync(path.join(prunedRoot, p)), p).toBe(true);
    expect(existsSync(path.join(prunedRoot, 'bin/busybox'))).toBe(true);
    expect(existsSync(path.join(prunedRoot, 'srv/hello'))).toBe(true);
    for (const gone of [
      'bin/sh',
      'bin/cat',
      'srv/unused',
      'usr/share/doc',
      'etc/passwd',
      'lhc-trace',
    ]) {
      expect(existsSync(path.join(prunedRoot, gone)), gone).toBe(false);
    }
    expect(report.dropped.entries).toBeGreaterThan(10);
    const json = JSON.parse(await readFile(path.join(out, 'trace-report.json'), 'utf8')) as {
      summary: string;
    };
    expect(json.summary).toMatch(/kept \d+ of \d+ entries/);

    const check = await selfCheck(ctxAt(path.join(tmp, 'sc-cat')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    });
    expect(check.responses.hello).toEqual(trace.responses.hello);
    // The self-check ran on a read-only view: nspawn left nothing in the pruned root.
    expect(readdirSync(prunedRoot).sort()).toEqual([
      'bin',
      'data',
      'dev',
      'proc',
      'run',
      'srv',
      'sys',
      'tmp',
      'usr',
    ]);
  });
});

describe('busybox root, symlinked entrypoint and content, writes to /data', () => {
  it('keeps the symlinks walked, sends written files to the data side, and still answers the same', async () => {
    const root = await busyboxRoot(path.join(tmp, 'bb-links'), {
      files: { '/srv/site/page.txt': 'page\n' },
    });
    await import('node:fs/promises').then((fs) =>
      fs.symlink('/srv/site', path.join(root, 'srv/current')),
    );
    const cfg = await config(
      'bb-links',
      [
        'service:',
        '  command: [/bin/sh, -c, "cd /srv/current && cat ./page.txt && echo seen >> /data/log && /bin/ls /srv/current"]',
        '  inetd: true',
        'probes: [{ name: p, type: gopher, selector: "", fixture: x }]',
      ].join('\n') + '\n',
    );
    const trace = await traceService(ctxAt(path.join(tmp, 'w-links')), { config: cfg, root: root });
    expect(trace.responses.p!.body.toString()).toBe('page\npage.txt\n');
    expect(trace.writtenUnderData).toEqual(['/data/log']);
    const { prunedRoot, report, dataDir } = await pruneRoot(ctxAt(path.join(tmp, 'p-links')), {
      root: root,
      trace,
      config: cfg,
    });
    const why = (p: string) => report.kept.list.find((k) => k.path === p)?.why ?? [];
    expect(why('/bin/sh')).toEqual(expect.arrayContaining(['symlink-on-path']));
    expect(why('/bin/busybox')).toEqual(expect.arrayContaining(['entrypoint']));
    expect(why('/srv/current')).toContain('symlink-on-path');
    expect(why('/srv/site/page.txt').length).toBeGreaterThan(0);
    expect(existsSync(path.join(prunedRoot, 'data/log'))).toBe(false);
    expect(existsSync(path.join(prunedRoot, 'srv/unused'))).toBe(false);
    await selfCheck(ctxAt(path.join(tmp, 'sc-links')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    });
  }, 300_000);
});

describe('busybox httpd, a listening service probed through its network namespace', () => {
  it('traces, prunes and self-checks; the pruned root has no shell', async () => {
    const cfg = await config(
      'bb-httpd',
      [
        'service: { command: [/usr/sbin/httpd, -f, -p, "8080", -h, /www], listen: 8080, timeout: 60 }',
        'probes:',
        '  - { name: index, type: http, path: /index.html, status: 200 }',
        '  - { name: missing, type: http, path: /nope.html, status: 404 }',
      ].join('\n') + '\n',
    );
    const trace = await traceService(ctxAt(path.join(tmp, 'w-httpd')), {
      config: cfg,
      root: bbRoot,
    });
    const index = trace.responses.index as { status: number; body: Buffer };
    expect(index.status).toBe(200);
    expect(index.body).toEqual(await readFile(path.join(bbRoot, 'www/index.html')));
    expect((trace.responses.missing as { status: number }).status).toBe(404);
    expect(trace.failedLookups).toContain('/www/nope.html');
    const { prunedRoot, dataDir, report } = await pruneRoot(ctxAt(path.join(tmp, 'p-httpd')), {
      root: bbRoot,
      trace,
      config: cfg,
    });
    expect(existsSync(path.join(prunedRoot, 'bin/sh'))).toBe(false);
    expect(existsSync(path.join(prunedRoot, 'www/unused.html'))).toBe(false);
    // The entrypoint is an absolute symlink to busybox: both are kept, each with its reason.
    expect(report.kept.list.find((k) => k.path === '/usr/sbin/httpd')?.why).toContain(
      'symlink-on-path',
    );
    expect(report.kept.list.find((k) => k.path === '/bin/busybox')?.why).toContain('entrypoint');
    await selfCheck(ctxAt(path.join(tmp, 'sc-httpd')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    });

    // The self-check can fail: without the page the pruned root answers 404, and says so.
    await rm(path.join(prunedRoot, 'www/index.html'));
    const err = await selfCheck(ctxAt(path.join(tmp, 'sc-httpd2')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(
      /probe 'index': HTTP status 200 before pruning, 404 after/,
    );
  }, 300_000);
});

describe("native tracing with host strace (a root of the host's own architecture)", () => {
  it("keeps only the payload's events (not nspawn's setup), prunes and self-checks", async () => {
    await requireTool('strace');
    const arch = hostArch();
    const debArch = arch === 'aarch64' ? 'arm64' : 'amd64';
    const root = await busyboxRoot(path.join(tmp, 'bb-native'), { debArch });
    const cfg = await config(
      'bb-native',
      `arch: ${arch}\nservice: { command: [/bin/sh, -c, "cd /srv && cat hello"], inetd: true }\nprobes: [{ name: p, type: gopher, fixture: x }]\n`,
    );
    const trace = await traceService(ctxAt(path.join(tmp, 'w-native')), {
      config: cfg,
      root: root,
    });
    expect(trace.emulated).toBe(false);
    expect(trace.responses.p!.body).toEqual(await readFile(path.join(root, 'srv/hello')));
    // Nothing from nspawn's own setup (host paths, cgroups, its own binary) survives the pid filter.
    for (const e of trace.events) {
      expect(e.path, `${e.syscall} ${e.path}`).not.toMatch(
        /^\/(sys\/fs\/cgroup|usr\/lib\/systemd|run\/systemd)|nspawn/,
      );
    }
    expect(
      trace.events.some((e) => e.op === 'open' && e.path === '/srv/hello' && e.result === 'ok'),
    ).toBe(true);
    const { prunedRoot, dataDir } = await pruneRoot(ctxAt(path.join(tmp, 'p-native')), {
      root: root,
      trace,
      config: cfg,
    });
    expect(existsSync(path.join(prunedRoot, 'srv/unused'))).toBe(false);
    await selfCheck(ctxAt(path.join(tmp, 'sc-native')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    });
  }, 300_000);
});

describe('services that fail while traced', () => {
  it('a crash gives a clear error with the exit code and the end of stderr', async () => {
    const cfg = await config(
      'bb-crash',
      'service: { command: [/bin/busybox, sh, -c, "echo cannot open /srv/config >&2; exit 3"], inetd: true }\nprobes: [{ name: p, type: gopher, fixture: x }]\n',
    );
    const err = await traceService(ctxAt(path.join(tmp, 'w-crash')), {
      config: cfg,
      root: bbRoot,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/exited with code 3 while answering probe 'p'/);
    expect((err as Error).message).toContain('cannot open /srv/config');
    expect(existsSync(path.join(tmp, 'w-crash/trace/trace-root'))).toBe(false);
  }, 120_000);

  it('a connection killed by a signal is reported as killed, with the end of stderr', async () => {
    const cfg = await config(
      'bb-segv',
      'service: { command: [/bin/busybox, sh, -c, "echo about to crash >&2; kill -SEGV $$"], inetd: true, timeout: 20 }\nprobes: [{ name: p, type: gopher, fixture: x }]\n',
    );
    const started = Date.now();
    const err = await traceService(ctxAt(path.join(tmp, 'w-segv')), {
      config: cfg,
      root: bbRoot,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/ was killed while answering probe 'p'/);
    expect((err as Error).message).toContain('about to crash');
    expect(Date.now() - started).toBeLessThan(15_000);
  }, 120_000);

  it('a process a connection leaves behind does not hold the connection open', async () => {
    const cfg = await config(
      'bb-orphan',
      'service: { command: [/bin/busybox, sh, -c, "/bin/busybox sleep 60 & echo hi"], inetd: true, timeout: 30 }\nprobes:\n  - { name: p, type: gopher, fixture: x }\n  - { name: q, type: gopher, selector: /q, fixture: x }\n  - { name: r, type: gopher, selector: /r, fixture: x }\n',
    );
    const started = Date.now();
    const trace = await traceService(ctxAt(path.join(tmp, 'w-orphan')), {
      config: cfg,
      root: bbRoot,
      parallel: 1,
    });
    for (const n of ['p', 'q', 'r']) expect(trace.responses[n]!.body.toString()).toBe('hi\n');
    expect(Date.now() - started).toBeLessThan(20_000);
  }, 120_000);

  it('a listening service that exits before listening is reported, not waited for', async () => {
    const cfg = await config(
      'bb-nolisten',
      'service: { command: [/bin/busybox, sh, -c, "echo no port for you >&2; exit 7"], listen: 8081, timeout: 60 }\nprobes: [{ name: p, type: http, path: / }]\n',
    );
    const started = Date.now();
    const err = await traceService(ctxAt(path.join(tmp, 'w-nolisten')), {
      config: cfg,
      root: bbRoot,
    }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/exited with code 7 before listening on port 8081/);
    expect((err as Error).message).toContain('no port for you');
    expect(Date.now() - started).toBeLessThan(30_000);
  }, 120_000);

  it('service.timeout is enforced', async () => {
    const cfg = await config(
      'bb-hang',
      'service: { command: [/bin/busybox, sleep, "600"], inetd: true, timeout: 3 }\nprobes: [{ name: p, type: gopher, fixture: x }]\n',
    );
    const started = Date.now();
    const err = await traceService(ctxAt(path.join(tmp, 'w-hang')), {
      config: cfg,
      root: bbRoot,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(
      /did not finish probe 'p' within service.timeout \(3 s\)/,
    );
    expect(Date.now() - started).toBeLessThan(30_000);
  }, 120_000);
});

describe('gophermoon on scratch with the static aarch64 Lua', () => {
  it('keeps only Lua, the script, the content and the mount points; every probe answers the same', async () => {
    const cfg = await loadConfig(path.join(REPO, 'examples/gophermoon/lhc.yml'));
    const tarball = await luaSourceTarball('5.4.4');
    const store = new Store(path.join(tmp, 'store'));
    await store.add(tarball.path);
    const work = path.join(tmp, 'gm');
    await mkdir(work, { recursive: true });
    const lua = await buildLua(ctxAt(work, store), {
      version: '5.4.4',
      sha256: LUA_SOURCES['5.4.4'].sha256,
      arch: 'aarch64',
      strategy: 'cross',
      cacheDir: path.join(testCacheDir(), 'lhc-cache'),
    });
    const { root } = await assembleRoot(ctxAt(work, store), { config: cfg, luaPath: lua.path });
    const trace = await traceService(ctxAt(path.join(tmp, 'w-gm')), { config: cfg, root: root });
    for (const p of cfg.probes)
      if (p.type === 'gopher')
        expect(trace.responses[p.name]?.body, p.name).toEqual(await readFile(p.fixture));
    const { prunedRoot, report, dataDir } = await pruneRoot(ctxAt(path.join(tmp, 'p-gm')), {
      root: root,
      trace,
      config: cfg,
    });
    const files = report.kept.list.filter((k) => k.kind !== 'dir').map((k) => k.path);
    const content = report.kept.list.filter(
      (k) => k.path.startsWith('/gopher/') && k.kind === 'file',
    ).length;
    const inRoot = readdirSync(path.join(root, 'gopher'), {
      recursive: true,
      withFileTypes: true,
    }).filter((d) => d.isFile()).length;
    expect(content).toBe(inRoot);
    expect(files.filter((f) => !f.startsWith('/gopher/')).sort()).toEqual([
      '/bin/gophermoon',
      '/bin/lua',
    ]);
    for (const k of report.kept.list.filter((k) => k.kind === 'dir')) {
      expect(
        k.why.some((w) => ['mount-point', 'parent-dir', 'keep-glob', 'traced-open'].includes(w)),
        k.path,
      ).toBe(true);
    }
    expect(existsSync(path.join(prunedRoot, 'bin/sh'))).toBe(false);
    await selfCheck(ctxAt(path.join(tmp, 'sc-gm')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    });
  }, 900_000);
});

describe('nginx on a Debian arm64 base', () => {
  it('prunes to at most 5 % of the base, without /bin/sh, and / still answers 200 with the same body', async () => {
    await requireTool('mmdebstrap');
    const cfg = await loadConfig(path.join(REPO, 'examples/nginx/lhc.yml'));
    const work = path.join(tmp, 'nginx');
    await mkdir(work, { recursive: true });
    const store = new Store(path.join(tmp, 'store'));
    const { root } = await assembleRoot(ctxAt(work, store), {
      config: cfg,
      basesDir: path.join(testCacheDir(), 'bases'),
    });
    const trace = await traceService(ctxAt(path.join(tmp, 'w-nginx')), { config: cfg, root: root });
    const index = trace.responses.index as { status: number; body: Buffer };
    expect(index.status).toBe(200);
    const fixture = cfg.probes.find((p) => p.name === 'index')?.fixture;
    if (fixture) expect(index.body).toEqual(await readFile(fixture));
    const { prunedRoot, report, dataDir } = await pruneRoot(ctxAt(path.join(tmp, 'p-nginx')), {
      root: root,
      trace,
      config: cfg,
    });
    await writeTraceReport(report, path.join(tmp, 'p-nginx/trace-report.json'));
    expect(report.kept.bytes / report.base.bytes).toBeLessThanOrEqual(0.05);
    expect(resolveTraced(prunedRoot, '/bin/sh').exists).toBe(false);
    expect(report.kept.list.find((k) => k.path === '/usr/sbin/nginx')?.why).toContain('entrypoint');
    expect(
      report.kept.list.some((k) => k.why.includes('dt-needed') || k.why.includes('elf-interp')),
    ).toBe(true);
    const check = await selfCheck(ctxAt(path.join(tmp, 'sc-nginx')), {
      config: cfg,
      prunedRoot,
      unprunedResponses: trace.responses,
      dataDir,
    });
    expect(check.responses.index).toEqual(trace.responses.index);
  }, 1_800_000);
});
