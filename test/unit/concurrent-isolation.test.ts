/**
 * What keeps two builds on one host apart: a machine name per run (nspawn keys host state by it),
 * removal of only our own, empty nspawn state directories, and a listener check that only counts
 * the socket our own activator holds (another build's listener on the same port is not ours).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { holdsListener, listenerInodes } from '../../src/harness/listen.js';
import { releaseMachineName } from '../../src/harness/machine-name.js';
import {
  PER_CONNECTION_MACHINE,
  boardNspawnArgv,
  containerIdentity,
  nspawnArgv,
  perConnectionMachine,
} from '../../src/tools/nspawn.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('containerIdentity', () => {
  it('gives every run its own machine name and keeps the hostname the directory name', () => {
    const names = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const id = containerIdentity('/tmp/work/trace/trace-root');
      expect(id.hostname).toBe('trace-root');
      expect(id.machineName).toMatch(/^lhc-trace-root-[a-z0-9]+$/);
      expect(id.machineName.length).toBeLessThanOrEqual(64);
      names.add(id.machineName);
    }
    expect(names.size).toBe(200);
  });

  it('makes a valid hostname of any directory name', () => {
    expect(containerIdentity('/w/my_service.v2/', 'x').hostname).toBe('my-service-v2');
    expect(containerIdentity('/w/___', 'x')).toEqual({ machineName: 'lhc-lhc-x', hostname: 'lhc' });
    const long = containerIdentity(`/w/${'a'.repeat(200)}`);
    expect(long.hostname.length).toBeLessThanOrEqual(40);
    expect(long.machineName.length).toBeLessThanOrEqual(64);
  });

  it('reaches the nspawn command line as --machine and --hostname', () => {
    const argv = nspawnArgv({
      root: '/r/gophermoon',
      command: ['/bin/x'],
      ...containerIdentity('/r/gophermoon', 'abc'),
    });
    expect(argv).toContain('--machine=lhc-gophermoon-abc');
    expect(argv).toContain('--hostname=gophermoon');
    expect(argv.indexOf('--hostname=gophermoon')).toBeLessThan(argv.indexOf('--'));
  });
});

describe('perConnectionMachine', () => {
  it('gives each connection of systemd-socket-activate NAME-PID, the rest of the argv as it was', async () => {
    const argv = boardNspawnArgv({
      root: '/r/gophermoon',
      dataDir: '/d',
      dataPath: '/data',
      command: ['/bin/lua', '/bin/gophermoon'],
      service: 'gophermoon',
      machineName: 'lhc-gophermoon-abc',
    });
    const wrapped = perConnectionMachine(argv);
    expect(wrapped.slice(0, 4)).toEqual(['/bin/sh', '-c', PER_CONNECTION_MACHINE, 'lhc-machine']);
    // What the shell execs: printed by an `echo` standing in for nspawn.
    const run = (a: string[]) =>
      new Promise<string>((resolve) => {
        const c = spawn(a[0]!, a.slice(1));
        let out = '';
        c.stdout.on('data', (b: Buffer) => (out += b.toString()));
        c.on('close', () => resolve(`${c.pid} ${out.trim()}`));
      });
    const [pid, ...words] = (
      await run(['/bin/sh', '-c', PER_CONNECTION_MACHINE, 'x', '/bin/echo', ...wrapped.slice(5)])
    ).split(' ');
    expect(words[0]).toBe(`--machine=lhc-gophermoon-abc-${pid}`);
    expect(words.slice(1)).toEqual(argv.slice(1).filter((a) => !a.startsWith('--machine=')));
    expect(() => perConnectionMachine(['systemd-nspawn', '--', '--machine=x'])).toThrow();
  });
});

describe('releaseMachineName', () => {
  it('removes only the named, empty state directories', async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), 'lhc-machine-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    const propagate = path.join(base, 'propagate');
    const exported = path.join(base, 'unix-export');
    for (const d of ['lhc-a-1', 'lhc-b-2', 'lhc-c-3'])
      await mkdir(path.join(propagate, d), { recursive: true });
    await mkdir(path.join(exported, 'lhc-a-1'), { recursive: true });
    // Still in use by a running container: something inside, left alone.
    await writeFile(path.join(propagate, 'lhc-c-3', 'held'), '');
    await releaseMachineName('lhc-a-1', [propagate, exported]);
    await releaseMachineName('lhc-c-3', [propagate, exported]);
    expect(existsSync(path.join(propagate, 'lhc-a-1'))).toBe(false);
    expect(existsSync(path.join(exported, 'lhc-a-1'))).toBe(false);
    expect(existsSync(path.join(propagate, 'lhc-b-2'))).toBe(true);
    expect(existsSync(path.join(propagate, 'lhc-c-3', 'held'))).toBe(true);
  });

  it('removes the per-connection names made from it (NAME-PID), and only those', async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), 'lhc-machine-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    const propagate = path.join(base, 'propagate');
    for (const d of ['lhc-v-1', 'lhc-v-4242', 'lhc-v-x1', 'lhc-vv-1', 'lhc-v'])
      await mkdir(path.join(propagate, d), { recursive: true });
    await releaseMachineName('lhc-v', [propagate, path.join(base, 'absent')]);
    expect(readdirSync(propagate).sort()).toEqual(['lhc-v-x1', 'lhc-vv-1']);
  });

  it('refuses names that are not lhc machine names (no path games)', async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), 'lhc-machine-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    await mkdir(path.join(base, 'p', 'root'), { recursive: true });
    await mkdir(path.join(base, 'victim'), { recursive: true });
    await releaseMachineName('root', [path.join(base, 'p')]);
    await releaseMachineName('lhc-x/../../victim', [path.join(base, 'p')]);
    expect(existsSync(path.join(base, 'p', 'root'))).toBe(true);
    expect(existsSync(path.join(base, 'victim'))).toBe(true);
  });
});

function listenIn(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

/** A separate process listening on a free port: another build's activator, as far as we care. */
function foreignListener(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      "const s=require('net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port))",
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  cleanups.push(() => void child.kill('SIGKILL'));
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) =>
      resolve({ child, port: Number(d.toString().trim()) }),
    );
    child.once('error', reject);
  });
}

describe('listener ownership', () => {
  it('parses the inode of a LISTEN row and ignores other states and ports', () => {
    const table = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0',
      '   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1',
      '   2: 0100007F:0046 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0',
    ].join('\n');
    expect(listenerInodes(table, 8080)).toEqual(['4242']);
    expect(listenerInodes(table, 70)).toEqual(['4444']);
    expect(listenerInodes(table, 71)).toEqual([]);
  });

  it('counts only the socket held by the given processes', async () => {
    const own = net.createServer();
    const port = await listenIn(own);
    cleanups.push(() => new Promise<void>((r) => own.close(() => r())));
    const other = await foreignListener();
    const second = await foreignListener();
    expect(await holdsListener([second.child.pid!], second.port)).toBe(true);
    // The port of another process answers, but it is not ours: the bug two builds hit.
    expect(await holdsListener([second.child.pid!], other.port)).toBe(false);
    expect(await holdsListener([other.child.pid!], other.port)).toBe(true);
    // This process's own sockets never count (a child between fork and exec shows them too).
    expect(await holdsListener([process.pid], port)).toBe(false);
  });
});

describe('a listener that has exited', () => {
  it("holds nothing (its port may now be anyone else's)", async () => {
    const gone = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await new Promise((r) => gone.once('exit', r));
    const other = await foreignListener();
    expect(await holdsListener([gone.pid!], other.port)).toBe(false);
  });
});
