/**
 * gophermoon for real: every probe of examples/gophermoon/lhc.yml and the extra hostile requests,
 * answered by the host's Lua (Debian lua5.4) and by the static aarch64 Luas (5.4.4 and 5.3.6)
 * that lhc builds, run under QEMU, must match the hand-written fixtures byte for byte. Syscall traces (strace for the
 * host Lua, QEMU_STRACE for aarch64) prove that no hostile request makes the server open or even
 * stat a path outside the content root; a symlinked copy of the content shows that symlinks
 * pointing outside are never followed. Finally a real client (curl) fetches through
 * systemd-socket-activate, the way the board runs it.
 */
import { cpSync, readFileSync, realpathSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildIndex, INDEX_NAME } from '../../examples/gophermoon/make-index.js';
import { loadConfig } from '../../src/config/load.js';
import type { GopherProbe } from '../../src/config/schema.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { buildLua } from '../../src/stages/lua.js';
import { Store } from '../../src/store/store.js';
import { run, start } from '../../src/tools/exec.js';
import { parseHostStrace, parseQemuStrace, type TraceEvent } from '../../src/trace/parse-strace.js';
import { luaSourceTarball, testCacheDir, LUA_SOURCES } from '../support/debian-inputs.js';
import {
  EXTRA_REQUESTS,
  GOPHERMOON_CONFIG,
  GOPHERMOON_CONTENT,
  GOPHERMOON_FIXTURES,
  GOPHERMOON_SCRIPT,
  requestFor,
  serveOnce,
} from '../support/gopher.js';
import { requireTool } from '../support/require-tool.js';
import { isUnder } from '../../src/root/lookup.js';
import { freePort } from '../../src/harness/client.js';

interface Case {
  name: string;
  request: Buffer;
  fixture: string;
  tree: 'content' | 'symlinks';
}

interface Interpreter {
  name: string;
  lua: string[];
  /** Runs `lua` with a syscall trace written to `file`; returns the trace's file events. */
  traced(file: string): {
    wrapper: string[];
    env: Record<string, string>;
    parse: (text: string) => TraceEvent[];
  };
}

let tmp: string;
let symlinkTree: string;
let outsideDir: string;
let cases: Case[];
const interpreters: Interpreter[] = [];

function rootOf(c: Case): string {
  return c.tree === 'content' ? GOPHERMOON_CONTENT : symlinkTree;
}

/**
 * The content copy for the symlink cases: links to a file and a directory outside the root
 * (absolute and relative), and one to a directory inside it, then indexed the way a build does;
 * then one file grows, as if the index had gone stale.
 */
async function makeSymlinkTree(): Promise<void> {
  symlinkTree = path.join(tmp, 'content-with-links');
  cpSync(GOPHERMOON_CONTENT, symlinkTree, { recursive: true });
  outsideDir = path.join(tmp, 'outside');
  await mkdir(outsideDir);
  await writeFile(path.join(outsideDir, 'secret.txt'), 'Secret moon base coordinates\n');
  await symlink('/etc/passwd', path.join(symlinkTree, 'archive/passwd'));
  await symlink('../../../../../../../../../../etc', path.join(symlinkTree, 'archive/escape'));
  await symlink('/etc', path.join(symlinkTree, 'etc'));
  await symlink(path.join(outsideDir, 'secret.txt'), path.join(symlinkTree, 'moon/secret.txt'));
  await symlink('moon', path.join(symlinkTree, 'moon-link'));
  const index = await buildIndex(symlinkTree);
  expect(index.skipped.map((s) => s.path).sort()).toEqual([
    '/archive/escape',
    '/archive/passwd',
    '/etc',
    '/moon-link',
    '/moon/secret.txt',
  ]);
  await writeFile(path.join(symlinkTree, INDEX_NAME), index.text);
  // Changed after indexing: the server must notice the size and refuse.
  await appendFile(
    path.join(symlinkTree, 'about.txt'),
    'A line added after the index was written.\n',
  );
}

async function staticAarch64Lua(version: '5.4.4' | '5.3.6'): Promise<string> {
  const tarball = await luaSourceTarball(version);
  const store = new Store(path.join(tmp, 'store'));
  await store.add(tarball.path);
  const built = await buildLua(stageContext({ logger: memoryLogger(), store, workDir: tmp }), {
    version,
    sha256: LUA_SOURCES[version].sha256,
    arch: 'aarch64',
    strategy: 'cross',
    // Cached across runs: the key covers source, toolchain and flags.
    cacheDir: path.join(testCacheDir(), 'lhc-cache'),
  });
  return built.path;
}

beforeAll(async () => {
  for (const tool of [
    'lua5.4',
    'qemu-aarch64-static',
    'strace',
    'systemd-socket-activate',
    'curl',
    'aarch64-linux-gnu-gcc',
  ])
    await requireTool(tool);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-gophermoon-'));
  await makeSymlinkTree();
  const aarch64 = await staticAarch64Lua('5.4.4');
  // The server promises plain Lua 5.3 too.
  const aarch64Lua53 = await staticAarch64Lua('5.3.6');

  interpreters.push(
    {
      name: 'host lua5.4',
      lua: ['lua5.4'],
      traced: (file) => ({
        wrapper: ['strace', '-f', '-qq', '-s', '4096', '-e', 'trace=%file', '-o', file],
        env: {},
        parse: (text) => parseHostStrace(text, { cwd: process.cwd() }).events,
      }),
    },
    {
      name: 'static aarch64 lua under QEMU',
      lua: ['qemu-aarch64-static', aarch64],
      traced: (file) => ({
        wrapper: [],
        // To a file, not stderr: the server's own stderr stays separate from the trace.
        env: { QEMU_STRACE: '1', QEMU_LOG_FILENAME: file },
        parse: (text) => parseQemuStrace(text, { cwd: process.cwd() }).events,
      }),
    },
    {
      name: 'static aarch64 lua 5.3.6 under QEMU',
      lua: ['qemu-aarch64-static', aarch64Lua53],
      traced: (file) => ({
        wrapper: [],
        env: { QEMU_STRACE: '1', QEMU_LOG_FILENAME: file },
        parse: (text) => parseQemuStrace(text, { cwd: process.cwd() }).events,
      }),
    },
  );

  const config = await loadConfig(GOPHERMOON_CONFIG);
  const probes = config.probes.filter((p): p is GopherProbe => p.type === 'gopher');
  cases = [
    ...probes.map((p) => ({
      name: `probe ${p.name}`,
      request: requestFor(p.selector),
      fixture: p.fixture,
      tree: 'content' as const,
    })),
    ...EXTRA_REQUESTS.map((r) => ({ ...r, fixture: path.join(GOPHERMOON_FIXTURES, r.fixture) })),
  ];
  expect(cases.length).toBeGreaterThanOrEqual(15);
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe.each([0, 1, 2])('gophermoon with interpreter #%i', (which) => {
  it('answers every probe and hostile request exactly as its fixture says', async () => {
    const interp = interpreters[which]!;
    const mismatches: string[] = [];
    for (const c of cases) {
      const r = await serveOnce(c.request, { lua: interp.lua, root: rootOf(c) });
      const want = readFileSync(c.fixture);
      if (!r.stdout.equals(want) || r.exitCode !== 0) {
        mismatches.push(
          `${c.name} (${path.basename(c.fixture)}), exit ${r.exitCode}:\n  got  ${JSON.stringify(r.stdout.toString('latin1').slice(0, 300))}\n  want ${JSON.stringify(want.toString('latin1').slice(0, 300))}\n  stderr ${r.stderr.trim()}`,
        );
      }
    }
    expect(mismatches, `${interp.name}:\n${mismatches.join('\n')}`).toEqual([]);
  });

  it('opens nothing outside the content root, whatever the request (syscall trace)', async () => {
    const interp = interpreters[which]!;
    const script = GOPHERMOON_SCRIPT;
    const problems: string[] = [];
    let tracedCases = 0;
    for (const [i, c] of cases.entries()) {
      const root = rootOf(c);
      const realRoot = realpathSync(root);
      const file = path.join(tmp, `trace-${which}-${i}.log`);
      const t = interp.traced(file);
      const r = await serveOnce(c.request, {
        lua: interp.lua,
        root,
        wrapper: t.wrapper,
        env: t.env,
      });
      if (!r.stdout.equals(readFileSync(c.fixture)))
        problems.push(`${c.name}: response differs from ${path.basename(c.fixture)} when traced`);
      const events = t.parse(await readFile(file, 'utf8'));
      // The interpreter loads its libraries first; what counts is everything after the script.
      const first = events.findIndex((e) => e.op === 'open' && e.path === script);
      if (first < 0) {
        problems.push(
          `${c.name}: the trace does not show the script being opened, so it cannot prove anything`,
        );
        continue;
      }
      tracedCases++;
      for (const e of events.slice(first + 1)) {
        const lexical = path.posix.normalize(e.path);
        if (!isUnder(lexical, root) || /(^|\/)\.\.(\/|$)/.test(e.path)) {
          problems.push(`${c.name}: ${e.syscall} ${e.path}`);
          continue;
        }
        // Every opened path must also resolve inside the root on this host (no symlink hop).
        let real: string | undefined;
        try {
          real = realpathSync(e.path);
        } catch {
          real = undefined;
        }
        if (real !== undefined && !isUnder(real, realRoot))
          problems.push(`${c.name}: ${e.syscall} ${e.path} resolves to ${real}`);
      }
      if (fixtureServes(c)) {
        // A served file must show up in the trace, or the trace would prove nothing.
        const served = servedPath(c);
        if (served && !events.some((e) => e.op === 'open' && e.path === path.join(root, served)))
          problems.push(`${c.name}: trace misses the open of ${served}`);
      }
    }
    expect(tracedCases).toBe(cases.length);
    expect(problems, `${interp.name}:\n${problems.join('\n')}`).toEqual([]);
  });
});

/** Text and binary cases serve one file; the trace must show it opened. */
function fixtureServes(c: Case): boolean {
  return /\.(text|binary)\.gopher$/.test(c.fixture);
}

function servedPath(c: Case): string | undefined {
  const line = c.request.toString('latin1').split(/\r?\n/)[0]!;
  return line.startsWith('/') && !line.includes('\t') && !line.includes('%') ? line : undefined;
}

async function waitForListener(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('socket activation with a real Gopher client', () => {
  it.each([0, 1])(
    'curl gets the fixtures through systemd-socket-activate --inetd (interpreter #%i)',
    async (which) => {
      const interp = interpreters[which]!;
      const port = await freePort();
      const activator = start([
        'systemd-socket-activate',
        '-l',
        `127.0.0.1:${port}`,
        '-a',
        '--inetd',
        '-E',
        `GOPHER_ROOT=${GOPHERMOON_CONTENT}`,
        '-E',
        'GOPHER_HOST=localhost',
        '-E',
        'GOPHER_PORT=70',
        ...interp.lua,
        GOPHERMOON_SCRIPT,
      ]);
      try {
        await waitForListener(port, 10_000);
        const fetches: [string, string][] = [
          [`gopher://127.0.0.1:${port}/1/`, 'root.menu.gopher'],
          [`gopher://127.0.0.1:${port}/1/moon`, 'moon.menu.gopher'],
          [`gopher://127.0.0.1:${port}/0/gophermoon.8.txt`, 'manpage.text.gopher'],
          [`gopher://127.0.0.1:${port}/9/archive/bytes.bin`, 'bytes.binary.gopher'],
          [`gopher://127.0.0.1:${port}/7/search%09moon`, 'search-moon.menu.gopher'],
          [`gopher://127.0.0.1:${port}/1/%2e%2e/%2e%2e/etc/passwd`, 'dotdot.error.gopher'],
        ];
        for (const [url, fixture] of fetches) {
          const r = await run(['curl', '-s', '-S', '--max-time', '30', url], {
            binary: true,
            timeoutMs: 60_000,
          });
          expect(
            r.stdoutBytes.equals(readFileSync(path.join(GOPHERMOON_FIXTURES, fixture))),
            `${url} vs ${fixture}:\n${r.stdout.slice(0, 400)}`,
          ).toBe(true);
        }
      } finally {
        await activator.stop();
      }
    },
  );
});
