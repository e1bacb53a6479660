/**
 * lhc-accept for real: the code bytes kept in accept-elf.ts are what the .S sources assemble to,
 * and each helper (x86_64 natively, aarch64 through binfmt_misc) serves connections on the
 * listening socket systemd-socket-activate passes as fd 3, as the systemd runtime's unit does:
 * a fresh process per connection with the connection as stdin and stdout, the environment
 * passed on, at most MAX at once, SIGALRM after SECONDS, and clear errors for bad usage.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
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

describe('lhc-accept', () => {
  let tmp: string;
  let activator: ChildProcess | undefined;
  const stderr: string[] = [];
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-accept-'));
    await requireTool('systemd-socket-activate', 'systemd');
  });
  afterEach(async () => {
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

  /** The helper for `arch` behind a socket on a free port, as the unit starts it. */
  async function serve(arch: Arch, args: string[], env: Record<string, string> = {}) {
    const helper = path.join(tmp, `lhc-accept-${arch}`);
    writeFileSync(helper, acceptElf(arch));
    chmodSync(helper, 0o755);
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
        'lhc-accept: usage: lhc-accept SECONDS MAX COMMAND...\n',
      ]);
      expect(spawnSync(helper, ['5', '0', '/bin/true']).status).toBe(2);
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
