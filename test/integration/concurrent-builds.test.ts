/**
 * Two builds on one host at once (issue 15, item 5): the same gophermoon config in two project
 * copies and a differently named one, as three separate `lhc build` processes with their own out
 * and work dirs, while other builds may hold loop devices and nspawn machines. All must pass,
 * the two copies must give identical images, and afterwards nothing of theirs may remain: no
 * mount, loop device, process, or nspawn machine state directory.
 *
 * The failure the issue saw ("no payload process appeared") came from verify taking another
 * build's listener for its own: the first test forces that collision.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../src/core/logger.js';
import { freePort } from '../../src/harness/client.js';
import { NSPAWN_STATE_DIRS } from '../../src/harness/machine-name.js';
import { startInetd, type RunState } from '../../src/harness/service.js';
import { seededBuildCache } from '../support/debian-inputs.js';
import { copyGophermoonCheckout } from '../support/gopher.js';
import { requireTools, snapshot, sweepLeftovers } from '../support/verify-image.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const TSX = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;
const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

let tmp: string;
beforeAll(async () => {
  await requireTools();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lhc-concurrent-'));
});
afterAll(async () => {
  if (!tmp) return;
  await sweepLeftovers(tmp);
  await rm(tmp, { recursive: true, force: true });
});

function read(endpoint: { host: string; port: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(endpoint.port, endpoint.host, () => s.end());
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks).toString()));
    s.on('error', reject);
  });
}

describe('a port another build already listens on', () => {
  it('is not taken for our service: the activator retries on a port of its own', async () => {
    // Another build's listener, bound just before ours: it answers, but not for us.
    const foreign = spawn(
      process.execPath,
      [
        '-e',
        "const s=require('net').createServer((c)=>c.end('FOREIGN\\n')).listen(0,'127.0.0.1',()=>console.log(s.address().port))",
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const taken = await new Promise<number>((resolve) =>
      foreign.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    const ports = [taken];
    const state: RunState = {
      workDir: tmp,
      rootDir: tmp,
      dataDir: tmp,
      sockets: new Set(),
      payloads: [],
    };
    try {
      const svc = await startInetd(
        ['echo', 'ours'],
        state,
        { config: undefined as never, logger: memoryLogger() },
        10_000,
        async () => ports.shift() ?? freePort(),
      );
      expect(svc.endpoint).not.toEqual({ host: '127.0.0.1', port: taken });
      expect(await read(svc.endpoint as { host: string; port: number })).toBe('ours\n');
    } finally {
      await state.service?.stop();
      foreign.kill('SIGKILL');
    }
  });
});

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function lhcBuild(args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<CliRun> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ['--import', TSX, path.join(REPO, 'src/cli-entry.ts'), 'build', '--json', ...args],
      { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) =>
      resolve({ code, stdout, stderr, seconds: (Date.now() - started) / 1000 }),
    );
  });
}

function lhcMachineDirs(): Set<string> {
  const out = new Set<string>();
  for (const d of NSPAWN_STATE_DIRS) {
    try {
      for (const n of readdirSync(d)) if (n.startsWith('lhc-')) out.add(path.join(d, n));
    } catch {
      // Not there on this systemd version.
    }
  }
  return out;
}

describe('three builds at once', () => {
  it('all pass, the two copies give identical images, and nothing of theirs remains', async () => {
    const { cacheDir } = await seededBuildCache();
    const machinesBefore = lhcMachineDirs();
    const projects = ['a', 'b', 'other'];
    const runs = await Promise.all(
      projects.map(async (p) => {
        const dir = path.join(tmp, p);
        const config = copyGophermoonCheckout(dir);
        if (p === 'other') {
          // A different config: another name (artifacts, hostname) on the same service.
          const text = await readFile(config, 'utf8');
          await writeFile(config, text.replace(/^name: gophermoon$/m, 'name: gophermoon-other'));
        }
        // Each build's temp dirs (verify's mounts, the default work dir) under its own project,
        // so what it leaves behind is recognisable.
        const ownTmp = path.join(dir, 'tmp');
        await mkdir(ownTmp);
        const work = p === 'a' ? ['--work-dir', path.join(dir, 'work')] : [];
        const r = await lhcBuild(['--out', path.join(dir, 'out'), ...work], path.dirname(config), {
          ...process.env,
          LHC_CACHE_DIR: cacheDir,
          TMPDIR: ownTmp,
        });
        return { p, dir, r };
      }),
    );
    for (const { p, r } of runs) {
      console.log(`build ${p}: exit ${r.code} in ${r.seconds.toFixed(1)} s`);
      expect(r.code, `${p}:\n${r.stderr.slice(-4000)}`).toBe(0);
      const j = JSON.parse(r.stdout) as { ok: boolean; verify: { ok: boolean } | null };
      expect(j.ok).toBe(true);
      expect(j.verify?.ok).toBe(true);
    }
    const image = (p: string, name = 'gophermoon') => path.join(tmp, p, 'out', `${name}.squashfs`);
    expect(sha256(image('a'))).toBe(sha256(image('b')));
    expect(readFileSync(path.join(tmp, 'a/out/gophermoon.manifest.json'))).toEqual(
      readFileSync(path.join(tmp, 'b/out/gophermoon.manifest.json')),
    );
    expect(sha256(image('other', 'gophermoon-other'))).toMatch(/^[0-9a-f]{64}$/);

    // Nothing of theirs is left: mounts, loop devices and processes under the test dir, and no
    // nspawn state directory of a machine name lhc made.
    expect(await snapshot(tmp)).toEqual({ mounts: [], loops: [], processes: [] });
    const newMachines = [...lhcMachineDirs()].filter((d) => !machinesBefore.has(d));
    expect(newMachines).toEqual([]);
    // The default work dirs and verify's scratch were removed (tsx keeps a cache there too).
    for (const p of projects) {
      const left = readdirSync(path.join(tmp, p, 'tmp')).filter((n) => n.startsWith('lhc-'));
      expect(left, p).toEqual([]);
    }
  });
});
