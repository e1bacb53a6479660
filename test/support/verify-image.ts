/**
 * A packed gophermoon image for the verify tests, made by the real stages: the static aarch64 Lua
 * (buildLua, cross, from Debian's byte-identical upstream tarball), the scratch root with the
 * config's overlay (assembleRoot) and the squashfs + data template (packImage). A scratch root
 * is already minimal, so trace and prune would not change it.
 *
 * Also what the "nothing left behind" assertions compare: mounts, loop devices and processes
 * that belong to one test directory (other helpers run containers on the same machine).
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type LhcConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/core/logger.js';
import { stageContext } from '../../src/core/stage.js';
import { buildLua } from '../../src/stages/lua.js';
import { packImage } from '../../src/stages/pack.js';
import { assembleRoot } from '../../src/stages/root.js';
import { Store } from '../../src/store/store.js';
import { hasTool, run } from '../../src/tools/exec.js';
import { packageFor } from '../../src/host/requirements.js';
import { LUA_SOURCES, luaSourceTarball, testCacheDir } from './debian-inputs.js';
import { GOPHERMOON_CONFIG } from './gopher.js';

export const VERIFY_TOOLS = [
  'systemd-nspawn',
  'systemd-socket-activate',
  'mksquashfs',
  'curl',
  'nsenter',
  'losetup',
  'aarch64-linux-gnu-gcc',
  'qemu-aarch64-static',
] as const;

export async function requireTools(tools: readonly string[] = VERIFY_TOOLS): Promise<void> {
  for (const tool of tools) {
    if (!(await hasTool(tool)))
      throw new Error(`${tool} is missing: apt-get install ${packageFor(tool) ?? tool}`);
  }
  if (process.getuid?.() !== 0)
    throw new Error('the verify integration tests mount images and run nspawn: run them as root');
}

export interface PackedImage {
  config: LhcConfig;
  root: string;
  image: string;
  dataTemplate: string;
}

export async function staticLua(workDir: string): Promise<string> {
  const version = '5.4.4';
  const tarball = await luaSourceTarball(version);
  const store = new Store(path.join(workDir, 'store'));
  await store.add(tarball.path);
  const built = await buildLua(stageContext({ logger: memoryLogger(), store, workDir }), {
    version,
    sha256: LUA_SOURCES[version].sha256,
    arch: 'aarch64',
    strategy: 'cross',
    cacheDir: path.join(testCacheDir(), 'lhc-cache'),
  });
  return built.path;
}

/** examples/gophermoon packed into `dir` (root in dir/work/root, artifacts in dir/out). */
export async function packedGophermoon(dir: string): Promise<PackedImage> {
  const config = await loadConfig(GOPHERMOON_CONFIG);
  const logger = memoryLogger();
  const workDir = path.join(dir, 'work');
  await mkdir(workDir, { recursive: true });
  const luaPath = await staticLua(workDir);
  const ctx = stageContext({
    logger,
    workDir,
    outDir: path.join(dir, 'out'),
    store: new Store(path.join(workDir, 'store')),
  });
  const { root } = await assembleRoot(ctx, { config, luaPath });
  const packed = await packImage(ctx, {
    root,
    name: config.name,
    epoch: 0,
    dataPath: config.data.path,
  });
  return { config, root, image: packed.image, dataTemplate: packed.dataTemplate };
}

/** What a verify run could leave behind, restricted to paths under `marker` (a test's own dir). */
export interface HostSnapshot {
  mounts: string[];
  loops: string[];
  /** "pid comm" of processes tied to `marker`: by command line, or by mounts of it in their namespace. */
  processes: string[];
}

function processesTiedTo(marker: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const foreignNs = readlinkSync(`/proc/${name}/ns/mnt`) !== readlinkSync('/proc/self/ns/mnt');
      // A payload's argv says nothing about us, but its mount table has our data tmpfs (source lhc-verify:DIR).
      const mountinfo = foreignNs ? readFileSync(`/proc/${name}/mountinfo`, 'utf8') : '';
      if (cmdline.includes(marker) || mountinfo.includes(marker)) {
        const comm = readFileSync(`/proc/${name}/comm`, 'utf8').trim();
        out.push(`${name} ${comm}`);
      }
    } catch {
      // Exited while we looked.
    }
  }
  return out.sort();
}

export async function snapshot(marker: string): Promise<HostSnapshot> {
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.includes(marker));
  const loops = (await run(['losetup', '-a'], { privileged: true })).stdout
    .split('\n')
    .filter((l) => l.includes(marker));
  return { mounts, loops, processes: processesTiedTo(marker) };
}

/**
 * Safety net for a failed test: kills processes tied to `marker`, lazily unmounts every mount
 * under it (deepest first) and detaches loop devices backed by files under it, so one failure
 * does not leave the shared machine dirty. Returns what it had to remove (empty when clean).
 */
export async function sweepLeftovers(marker: string): Promise<HostSnapshot> {
  const left = await snapshot(marker);
  for (const p of left.processes) {
    try {
      process.kill(Number(p.split(' ')[0]), 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  for (const line of [...left.mounts].reverse()) {
    await run(['umount', '-l', line.split(' ')[1]!], { privileged: true, reject: false });
  }
  for (const line of left.loops) {
    await run(['losetup', '-d', line.split(':')[0]!], { privileged: true, reject: false });
  }
  return left;
}
