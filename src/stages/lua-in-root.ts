/**
 * Strategy `in-root`: compile Lua with the target's own toolchain, inside an aarch64 build root
 * run by systemd-nspawn under QEMU user-mode (the way an Alpine user would `apk add build-base`
 * in the minirootfs). Slow (minutes) but needs no cross compiler on the host.
 *
 * The build root is made once by mmdebstrap and cached as a tarball keyed by what defines it
 * (packages, suite, architecture, apt sources); each build extracts a fresh copy, so nothing a
 * build does can leak into the next.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { formatCommand, hasTool, isRoot, run } from '../tools/exec.js';
import { removeTree } from '../tools/remove-tree.js';
import {
  BUILDROOT_PACKAGES,
  buildrootArgv,
  inRootMakeArgv,
  type LuaArch,
} from '../tools/lua-make.js';
import { nspawnArgv } from '../tools/nspawn.js';
import { containerIdentity, releaseMachineName } from '../harness/machine-name.js';
import { packageFor } from '../host/requirements.js';

export const BUILDROOT_SUITE = 'bookworm';

export interface Buildroot {
  key: string;
  tarball: string;
  /** Versions of the compiler, binutils and musl in the root: part of the Lua cache key. */
  toolchain: string;
}

export interface BuildrootOptions {
  /** Directory holding `<key>.tar` and `<key>.json`. */
  dir: string;
  arch: LuaArch;
  logger: Logger;
  suite?: string;
  /** mmdebstrap MIRROR arguments; default the host's deb822 apt sources file. */
  mirrors?: string[];
  signal?: AbortSignal;
}

const HOST_SOURCES = '/etc/apt/sources.list.d/debian.sources';

async function defaultMirrors(): Promise<string[]> {
  // The host's own sources: same mirror (or snapshot) the host installs from, which is the one
  // reachable from here. Without one mmdebstrap falls back to its built-in default mirror.
  return existsSync(HOST_SOURCES) ? [HOST_SOURCES] : [];
}

async function mirrorsIdentity(mirrors: string[]): Promise<string[]> {
  return Promise.all(mirrors.map(async (m) => (existsSync(m) ? await readFile(m, 'utf8') : m)));
}

/** The toolchain packages' versions, from the root's dpkg status database. */
export function toolchainFromDpkgStatus(status: string): string {
  const wanted =
    /^(gcc(-\d+)?|cpp(-\d+)?|binutils(-aarch64-linux-gnu|-x86-64-linux-gnu)?|musl|musl-dev|musl-tools|libc6-dev|make)$/;
  const found: string[] = [];
  for (const stanza of status.split(/\n\n+/)) {
    const pkg = /^Package: (.+)$/m.exec(stanza)?.[1];
    const version = /^Version: (.+)$/m.exec(stanza)?.[1];
    const installed = /^Status: .* installed$/m.test(stanza);
    if (pkg && version && installed && wanted.test(pkg)) found.push(`${pkg}=${version}`);
  }
  return found.sort().join(' ');
}

/** The cached build root for `opts`, made with mmdebstrap when missing (about two minutes). */
export async function ensureBuildroot(opts: BuildrootOptions): Promise<Buildroot> {
  const suite = opts.suite ?? BUILDROOT_SUITE;
  const mirrors = opts.mirrors ?? (await defaultMirrors());
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        packages: [...BUILDROOT_PACKAGES].sort(),
        suite,
        arch: opts.arch,
        variant: 'minbase',
        mirrors: await mirrorsIdentity(mirrors),
      }),
    )
    .digest('hex');
  const tarball = path.join(opts.dir, `${key}.tar`);
  const metaFile = path.join(opts.dir, `${key}.json`);
  if (existsSync(tarball) && existsSync(metaFile)) {
    const meta = JSON.parse(await readFile(metaFile, 'utf8')) as { toolchain: string };
    return { key, tarball, toolchain: meta.toolchain };
  }
  await mkdir(opts.dir, { recursive: true });
  const tmp = path.join(opts.dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}.tar`);
  // mmdebstrap's scratch root (with /proc, /sys, /dev mounts) lives here, so that a run killed
  // by a timeout leaves nothing mounted elsewhere: the finally below unmounts and removes it.
  const scratch = await mkdtemp(path.join(opts.dir, '.scratch-'));
  try {
    await opts.logger.group(
      `build root: mmdebstrap ${suite} ${opts.arch} (${BUILDROOT_PACKAGES.join(', ')})`,
      async () => {
        if (!(await hasTool('mmdebstrap'))) {
          throw new UserError(
            `the in-root strategy needs mmdebstrap: apt-get install ${packageFor('mmdebstrap')} (or run: lhc setup)`,
          );
        }
        // TMPDIR through `env`, because sudo would drop it from the environment.
        await run(
          [
            'env',
            `TMPDIR=${scratch}`,
            ...buildrootArgv({ suite, arch: opts.arch, out: tmp, mirrors }),
          ],
          {
            privileged: true,
            timeoutMs: 30 * 60_000,
            logger: opts.logger,
            loud: true,
            signal: opts.signal,
          },
        );
      },
    );
    const status = await run(['tar', '-xOf', tmp, './var/lib/dpkg/status'], {
      logger: opts.logger,
    });
    const toolchain = toolchainFromDpkgStatus(status.stdout);
    if (!/\bgcc(-\d+)?=/.test(toolchain) || !/\bmusl-tools=/.test(toolchain)) {
      throw new UserError(
        `the build root made by mmdebstrap lacks gcc or musl-tools (found: ${toolchain || 'nothing'})`,
      );
    }
    await writeFile(
      metaFile,
      `${JSON.stringify({ key, suite, arch: opts.arch, packages: BUILDROOT_PACKAGES, toolchain }, null, 2)}\n`,
    );
    await rename(tmp, tarball);
    return { key, tarball, toolchain };
  } finally {
    await rm(tmp, { force: true });
    await removeScratch(scratch);
  }
}

/** Unmounts whatever an interrupted mmdebstrap left under `dir` (deepest first), then removes it. */
async function removeScratch(dir: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => m !== undefined && m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run(['umount', '-l', m], { privileged: true, reject: false });
  await removeTree([dir], { reject: false, timeoutMs: 10 * 60_000 });
}

/**
 * Compiles the unpacked Lua tree `srcDir` inside a fresh copy of the build root and strips it
 * there; returns the path of the stripped binary (inside srcDir).
 */
export async function compileInRoot(
  srcDir: string,
  buildroot: Buildroot,
  opts: { logger: Logger; workDir?: string; jobs?: number; signal?: AbortSignal },
): Promise<string> {
  const work = await mkdtemp(path.join(opts.workDir ?? os.tmpdir(), 'lhc-buildroot-'));
  const root = path.join(work, 'root');
  try {
    await mkdir(root);
    await opts.logger.group('build root: extract', async () => {
      // Our own mmdebstrap output (device nodes, absolute symlinks, root-owned files): host tar
      // as root reproduces it faithfully.
      await run(['tar', '-C', root, '--numeric-owner', '-xf', buildroot.tarball], {
        privileged: true,
        timeoutMs: 10 * 60_000,
        logger: opts.logger,
      });
    });
    if (!existsSync(path.join(root, 'usr')))
      throw new UserError(`build root ${buildroot.tarball} has no /usr`);
    const make = inRootMakeArgv(opts.jobs ?? 1);
    const script = `${formatCommand(make)} && strip src/lua`;
    await opts.logger.group(`compile Lua in the build root under QEMU: ${script}`, async () => {
      const identity = containerIdentity(root);
      const compiling = run(
        nspawnArgv({
          root,
          command: ['/bin/sh', '-c', script],
          binds: [{ host: srcDir, container: '/src' }],
          workdir: '/src',
          ...identity,
        }),
        {
          privileged: true,
          timeoutMs: 45 * 60_000,
          logger: opts.logger,
          signal: opts.signal,
          stderrLines: 30,
        },
      );
      await compiling.finally(() => releaseMachineName(identity.machineName));
    });
    const binary = path.join(srcDir, 'src', 'lua');
    if (!existsSync(binary))
      throw new UserError(`the in-root build finished without producing ${binary}`);
    return binary;
  } finally {
    // Without root, the container's root wrote build products into srcDir: give them back to
    // the caller so its ordinary cleanup can remove them.
    if (!isRoot() && typeof process.getuid === 'function' && typeof process.getgid === 'function') {
      await run(['chown', '-R', `${process.getuid()}:${process.getgid()}`, srcDir], {
        privileged: true,
        reject: false,
      });
    }
    // The extracted root is root-owned: remove it with the same privilege that made it.
    await removeTree([work], { reject: false, timeoutMs: 10 * 60_000 });
  }
}
