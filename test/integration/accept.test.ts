/**
 * lhc-accept for real: the code bytes kept in accept-elf.ts are what the .S sources assemble to,
 * and each helper (x86_64 natively, aarch64 through binfmt_misc) serves connections on the
 * listening socket systemd-socket-activate passes as fd 3, as the systemd runtime's unit does:
 * a fresh process per connection with the connection as stdin and stdout, the environment
 * passed on, at most MAX at once, SIGALRM after SECONDS, and clear errors for bad usage. In once
 * mode (MAX 0) a helper serves one connection and exits 0; several helpers share one socket, as
 * the containers of one service will, each setting it O_NONBLOCK so that losing a connection to
 * another does not leave it blocked in accept4, deaf to SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembledHex } from '../support/assemble.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ACCEPT_CODE, acceptElf } from '../../src/accept/accept-elf.js';
import type { Arch } from '../../src/elf/static-elf.js';
import { requireTool } from '../support/require-tool.js';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/accept');

/** One connection: sends `input`, half-closes, and returns what came back and when it ended. */
function converse(port: number, input: string): Promise<{ text: string; ms: number }> {
  const t = Date.now();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.end(input));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve({ text: Buffer.concat(chunks).toString(), ms: Date.now() - t }));
  });
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** What `get` returns once it returns something, within `ms`. */
async function until<T>(what: string, get: () => T | undefined, ms = 10_000): Promise<T> {
  const t = Date.now();
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() - t > ms) throw new Error(`waited ${ms} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) =>
  new Promise<'still running'>((r) => setTimeout(() => r('still running'), ms));

/** Whether `pid` sleeps in poll (x86_64), or ppoll (the host call of QEMU for aarch64). */
function inPoll(pid: number): boolean {
  try {
    return ['7', '271'].includes(readFileSync(`/proc/${pid}/syscall`, 'utf8').split(' ')[0]!);
  } catch {
    return false;
  }
}

/** The pids of the children of `pid`. */
function children(pid: number): number[] {
  const list = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return list ? list.split(' ').map(Number) : [];
}

/** The status flags of `pid`'s file descriptor `fd` (O_NONBLOCK: 0o4000). */
function fdFlags(pid: number, fd: number): number {
  const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  return parseInt(/^flags:\s*(\d+)/m.exec(info)![1]!, 8);
}

describe('lhc-accept', () => {
  let tmp: string;
  let activator: ChildProcess | undefined;
  /** Helpers started under sharedSocket (not our children): killed after each test. */
  const strays: number[] = [];
  const stderr: string[] = [];
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-accept-'));
    await requireTool('systemd-socket-activate', 'systemd');
    await requireTool('perl', 'perl-base');
  });
  afterEach(async () => {
    for (const pid of strays.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    if (activator && activator.exitCode === null) {
      const done = new Promise((r) => activator!.once('exit', r));
      activator.kill('SIGKILL');
      await done;
    }
    activator = undefined;
  });
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** The helper for `arch` as a file, written once (a running one cannot be rewritten). */
  function helperFile(arch: Arch): string {
    const helper = path.join(tmp, `lhc-accept-${arch}`);
    if (!existsSync(helper)) {
      writeFileSync(helper, acceptElf(arch));
      chmodSync(helper, 0o755);
    }
    return helper;
  }

  /** The helper for `arch` behind a socket on a free port, as the unit starts it. */
  async function serve(arch: Arch, args: string[], env: Record<string, string> = {}) {
    const helper = helperFile(arch);
    const port = await freePort();
    stderr.length = 0;
    activator = spawn(
      'systemd-socket-activate',
      ['-l', `127.0.0.1:${port}`, ...Object.keys(env).map((k) => `-E${k}`), helper, ...args],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    activator.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    // systemd-socket-activate says "Listening on" once the socket is bound.
    const t = Date.now();
    while (!stderr.join('').includes('Listening on')) {
      if (Date.now() - t > 10_000) throw new Error(`no socket: ${stderr.join('')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return port;
  }

  /**
   * One listening socket for several helpers, started one by one: perl makes it blocking (as
   * systemd-socket-activate does; a socket unit's is O_NONBLOCK already, as one node made would
   * be), so that the helper's own fcntl is what counts, and execs a bash that starts each command
   * written to its stdin with the socket as fd 3 and says its pid and, when it ends, its exit
   * status. The socket outlives the helpers: a connection one leaves queued waits for the next.
   */
  async function sharedSocket() {
    const perl =
      // $^F = 3: the socket (fd 3) stays open across exec.
      'use IO::Socket::INET; use POSIX; $^F = 3;' +
      ' my $s = IO::Socket::INET->new(Listen => 16, LocalAddr => "127.0.0.1:0") or die "$!";' +
      ' POSIX::dup2(fileno($s), 3) or die "$!"; $| = 1; print "port ", $s->sockport, "\\n";' +
      ' exec "bash", "-c", $ARGV[0]';
    const bash = [
      "while IFS=$'\\t' read -r -a argv; do",
      '  ( "${argv[@]}" & echo "pid $!"; wait $!; echo "exit $! $?" ) &',
      'done',
      'wait',
    ].join('\n');
    stderr.length = 0;
    const launcher = spawn('perl', ['-e', perl, bash], { stdio: ['pipe', 'pipe', 'pipe'] });
    activator = launcher;
    launcher.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    const lines: string[] = [];
    const exits = new Map<number, (status: number) => void>();
    let partial = '';
    launcher.stdout!.on('data', (d: Buffer) => {
      const all = (partial + d.toString()).split('\n');
      partial = all.pop()!;
      for (const line of all) {
        lines.push(line);
        const [word, pid, status] = line.split(' ');
        if (word === 'exit') exits.get(Number(pid))?.(Number(status));
      }
    });
    const port = Number(
      (await until('the socket', () => lines.find((l) => /^port /.test(l)))).slice(5),
    );
    let started = 0;
    /** A helper on the socket (once it sleeps in poll if `idle`); `exited`: its exit status. */
    async function start(arch: Arch, args: string[], idle = true) {
      launcher.stdin!.write([helperFile(arch), ...args].join('\t') + '\n');
      const n = started++;
      const line = await until('a helper', () => lines.filter((l) => /^pid /.test(l))[n]);
      const pid = Number(line.slice(4));
      strays.push(pid);
      const exited = new Promise<number>((r) => {
        const seen = lines.find((l) => l.startsWith(`exit ${pid} `));
        if (seen) r(Number(seen.split(' ')[2]));
        else exits.set(pid, r);
      });
      if (idle)
        await until(`helper ${pid} in poll`, () => {
          if (lines.some((l) => l.startsWith(`exit ${pid} `)))
            throw new Error(`helper ${pid} ended: ${stderr.join('')}`);
          return inPoll(pid) || undefined;
        });
      return { pid, exited };
    }
    return { port, start };
  }

  it.each(['aarch64', 'x86_64'] as const)(
    'keeps the bytes that accept.%s.S assembles to',
    (arch) => {
      expect(assembledHex(arch, path.join(SRC, `accept.${arch}.S`), tmp)).toBe(ACCEPT_CODE[arch]);
    },
  );

  it.each(['x86_64', 'aarch64'] as const)(
    'the %s helper runs a fresh process per connection, the connection as stdin and stdout',
    async (arch) => {
      // A host shell: the aarch64 helper (QEMU through binfmt) execs it natively.
      const port = await serve(arch, ['5', '4', '/bin/sh', '-c', 'read l; echo "$$ $l $KEEP"'], {
        KEEP: 'me',
      });
      const answers = await Promise.all(
        ['a', 'b', 'c', 'd', 'e', 'f'].map((x) => converse(port, `${x}\n`)),
      );
      const lines = answers.map((a) => a.text.trim().split(' '));
      expect(lines.map((l) => l.slice(1))).toEqual(
        ['a', 'b', 'c', 'd', 'e', 'f'].map((x) => [x, 'me']),
      );
      expect(new Set(lines.map((l) => l[0])).size).toBe(6);
    },
  );

  it('serves at most MAX connections at once; the next waits for a free slot', async () => {
    const port = await serve('x86_64', ['10', '1', '/bin/sh', '-c', 'sleep 0.6; echo done']);
    const [a, b] = await Promise.all([converse(port, ''), converse(port, '')]);
    expect([a.text, b.text]).toEqual(['done\n', 'done\n']);
    expect(Math.max(a.ms, b.ms)).toBeGreaterThanOrEqual(1100);
  });

  it('ends a connection whose process outlives SECONDS (SIGALRM), and goes on serving', async () => {
    const port = await serve('aarch64', ['1', '4', '/bin/sh', '-c', 'echo start; exec sleep 30']);
    const slow = await converse(port, '');
    expect(slow.text).toBe('start\n');
    expect(slow.ms).toBeGreaterThanOrEqual(900);
    expect(slow.ms).toBeLessThan(10_000);
    expect((await converse(port, '')).text).toBe('start\n');
  });

  it('drains on SIGTERM: no new connection, the one in flight finishes, then exit 0', async () => {
    const port = await serve('aarch64', ['10', '4', '/bin/sh', '-c', 'read l; sleep 1; echo "$l"']);
    const inFlight = converse(port, 'kept\n');
    // The connection's process is running once the helper has a child.
    const helper = activator!.pid!;
    const t = Date.now();
    while (!readFileSync(`/proc/${helper}/task/${helper}/children`, 'utf8').trim()) {
      if (Date.now() - t > 10_000) throw new Error('no connection process');
      await new Promise((r) => setTimeout(r, 20));
    }
    const exited = new Promise<number | null>((r) => activator!.once('exit', (code) => r(code)));
    process.kill(helper, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    await expect(converse(port, 'late\n')).rejects.toThrow(/ECONNREFUSED/);
    expect((await inFlight).text).toBe('kept\n');
    expect(await exited).toBe(0);
  });

  it.each(['x86_64', 'aarch64'] as const)(
    'the %s helper in once mode (MAX 0) serves one connection, then exits 0 (the command failed)',
    async (arch) => {
      const { port, start } = await sharedSocket();
      const command = ['/bin/sh', '-c', 'read l; echo "$PPID $$ $l"; sleep 0.5; exit 3'];
      const a = await start(arch, ['5', '0', ...command]);
      const first = converse(port, 'one\n');
      await until('the first connection process', () => children(a.pid)[0]);
      // Made while that process runs: the helper does not accept it, it stays queued.
      const second = converse(port, 'two\n').then((r) => r.text);
      const [ppid, pid, line] = (await first).text.trim().split(' ');
      expect([Number(ppid), line]).toEqual([a.pid, 'one']);
      expect(Number(pid)).not.toBe(a.pid);
      expect(await Promise.race([a.exited, sleep(2000)])).toBe(0);
      expect(await Promise.race([second, sleep(300)])).toBe('still running');
      // The next helper on the socket serves it.
      const b = await start(arch, ['5', '0', ...command], false);
      expect(await second).toMatch(new RegExp(`^${b.pid} \\d+ two\\n$`));
      expect(await Promise.race([b.exited, sleep(2000)])).toBe(0);
    },
  );

  it.each(['x86_64', 'aarch64'] as const)(
    'SIGTERM ends an idle %s helper in once mode at once, a busy one once its connection is served',
    async (arch) => {
      const { port, start } = await sharedSocket();
      const command = ['/bin/sh', '-c', 'read l; sleep 1; echo "$l"'];
      const idle = await start(arch, ['5', '0', ...command]);
      process.kill(idle.pid, 'SIGTERM');
      expect(await Promise.race([idle.exited, sleep(2000)])).toBe(0);
      const busy = await start(arch, ['5', '0', ...command]);
      const inFlight = converse(port, 'kept\n');
      await until('the connection process', () => children(busy.pid)[0]);
      process.kill(busy.pid, 'SIGTERM');
      expect(await Promise.race([busy.exited, sleep(500)])).toBe('still running');
      expect((await inFlight).text).toBe('kept\n');
      expect(await Promise.race([busy.exited, sleep(2000)])).toBe(0);
    },
  );

  it.each(['x86_64', 'aarch64'] as const)(
    '%s helpers sharing a socket: one takes each connection, the others poll again and hear SIGTERM',
    async (arch) => {
      const { port, start } = await sharedSocket();
      // Who answered, and the connection's flags.
      const command = ['/bin/sh', '-c', 'echo $PPID; grep ^flags /proc/self/fdinfo/0'];
      const first = await start(arch, ['5', '4', ...command]);
      // The socket is O_NONBLOCK now (a flag of the socket, for all that share it).
      expect(fdFlags(first.pid, 3) & 0o4000).toBe(0o4000);
      // In loop and in once mode; the more of them, the likelier a connection lost to another.
      const running = new Set([first]);
      const once = new Set<number>();
      for (const max of ['4', '4', '4', '0', '0']) {
        const helper = await start(arch, ['5', max, ...command]);
        running.add(helper);
        if (max === '0') once.add(helper.pid);
      }
      for (let round = 0; round < 10; round++) {
        // All sleep in poll, all wake for the connection, one accepts it.
        const [who, flags] = (await converse(port, '')).text.split('\n');
        const winner = [...running].find((h) => h.pid === Number(who));
        expect(winner).toBeDefined();
        // The connection itself stays blocking, for the command.
        expect(parseInt(flags!.split(/\s+/)[1]!, 8) & 0o4000).toBe(0);
        if (once.has(winner!.pid)) {
          expect(await Promise.race([winner!.exited, sleep(2000)])).toBe(0);
          running.delete(winner!);
        }
        // The others got EAGAIN and poll again. Without O_NONBLOCK one could block in accept4
        // instead, where a SIGTERM (read from a signalfd) would not end it.
        for (const h of running)
          await until(`helper ${h.pid} to poll again`, () => inPoll(h.pid) || undefined, 2000);
      }
      for (const h of running) process.kill(h.pid, 'SIGTERM');
      for (const h of running) expect(await Promise.race([h.exited, sleep(2000)])).toBe(0);
    },
  );

  it('closes a connection it cannot serve and says why; bad usage exits with a message', async () => {
    const port = await serve('x86_64', ['5', '4', '/nonexistent/program']);
    expect((await converse(port, '')).text).toBe('');
    expect((await converse(port, '')).text).toBe('');
    expect(stderr.join('')).toContain('lhc-accept: cannot execute the service command\n');
    for (const arch of ['x86_64', 'aarch64'] as const) {
      const helper = path.join(tmp, `lhc-accept-${arch}`);
      const usage = spawnSync(helper, ['5', 'x', '/bin/true']);
      expect([usage.status, usage.stderr.toString()]).toEqual([
        2,
        'lhc-accept: usage: lhc-accept SECONDS MAX COMMAND... (MAX 0: one connection)\n',
      ]);
      // Started without a socket (fd 3 is not one), as by hand.
      const none = spawnSync(helper, ['5', '4', '/bin/true'], {
        stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      });
      expect([none.status, none.stderr.toString()]).toEqual([
        1,
        'lhc-accept: no listening socket at fd 3 (start me from a socket unit with Accept=no)\n',
      ]);
    }
  });
});
