/**
 * The root stage: lays down the base (scratch, a rootfs tarball, or a Debian tree made by
 * mmdebstrap), runs the config's `packages` command inside it (systemd-nspawn, under QEMU when
 * the root is foreign), overlays the config's files and the static Lua, and creates the data
 * directory seeded from the data template. The result is the unpruned root the tracer runs.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  rmSync,
  type Stats,
} from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { LhcConfig } from '../config/load.js';
import type { Base } from '../config/schema.js';
import { ConfigError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StageContext } from '../core/stage.js';
import { cacheDir } from '../core/paths.js';
import { extractTarball, type ExtractSummary } from '../root/extract.js';
import { copyTree, ensureDir, installFile, normalizedMode } from '../root/overlay.js';
import { resolveInRoot } from '../root/resolve.js';
import { sha256File, type Store } from '../store/store.js';
import { removeTree } from '../tools/remove-tree.js';
import { run } from '../tools/exec.js';
import { DEBIAN_ARCH, hostMirrorLines, mmdebstrapArgv } from '../tools/mmdebstrap.js';
import { NSPAWN_DIRS, nspawnArgv } from '../tools/nspawn.js';
import { containerIdentity, releaseMachineName } from '../harness/machine-name.js';

export interface RootStageInput {
  config: LhcConfig;
  /** Host path of the static Lua to install at config.lua.path (default /bin/lua). */
  luaPath?: string;
  /** Where Debian base tarballs are cached; default cacheDir()/bases. */
  basesDir?: string;
  /** Host apt sources (deb822) used as the Debian mirror; default the host's own. */
  hostSourcesFile?: string;
}

interface AssembleRootOptions extends Omit<RootStageInput, 'config'> {
  store: Store;
  logger: Logger;
  signal?: AbortSignal;
}

export interface AssembledRoot {
  root: string;
  /** Bytes of regular file content in the assembled (unpruned) root, each inode counted once. */
  baseBytes: number;
}

/** A scratch root gets nspawn's directories, and /bin and /etc for entrypoints and config. */
export const SCRATCH_DIRS = ['/bin', '/etc', ...NSPAWN_DIRS] as const;

const HOST_SOURCES = '/etc/apt/sources.list.d/debian.sources';
const PACKAGES_TIMEOUT_MS = 30 * 60_000;
const MMDEBSTRAP_TIMEOUT_MS = 40 * 60_000;

/** Sum of regular file sizes under `dir`, hardlinked files counted once; symlinks are not followed. */
export function treeBytes(dir: string): number {
  const seen = new Set<string>();
  let total = 0;
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      const st = lstatSync(p, { bigint: false });
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
        total += st.size;
      }
    }
  };
  walk(dir);
  return total;
}

/** A new empty root with the directories nspawn needs. */
export async function makeScratchRoot(root: string): Promise<void> {
  await mkdir(root, { mode: 0o755 });
  for (const d of SCRATCH_DIRS) ensureDir(root, d, d === '/tmp' ? 0o1777 : 0o755);
}

/** The argv that runs `prepare` inside the root: a string goes through the root's /bin/sh. */
export function prepareCommand(prepare: string | readonly string[]): string[] {
  return typeof prepare === 'string' ? ['/bin/sh', '-c', prepare] : [...prepare];
}

/**
 * Runs a command inside the root with systemd-nspawn (QEMU via binfmt for a foreign root); its
 * output is shown as it arrives. With hostDns the command resolves names with the host's
 * resolv.conf, bound read-only for the run only (apk and apt-get need it; the Alpine minirootfs
 * has none), and the empty mount point nspawn leaves behind is removed: the image never carries
 * the build host's DNS configuration.
 */
export async function runInRoot(
  root: string,
  command: readonly string[],
  opts: { logger: Logger; signal?: AbortSignal; timeoutMs?: number; hostDns?: boolean },
): Promise<{ stdout: string; stderr: string }> {
  const identity = containerIdentity(root);
  const argv = nspawnArgv({
    root,
    command,
    ...identity,
    resolvConf: opts.hostDns ? 'bind-host' : 'off',
  });
  // Only a real /etc directory is looked into: a symlinked /etc could point anywhere on the host.
  const etcIsDir = lstatOrUndefined(path.join(root, 'etc'))?.isDirectory() ?? false;
  const resolvConf = path.join(root, 'etc', 'resolv.conf');
  const hadResolvConf = !etcIsDir || lstatOrUndefined(resolvConf) !== undefined;
  try {
    const r = await run(argv, {
      privileged: true,
      logger: opts.logger,
      loud: true,
      onLine: (line) => opts.logger.info(`  ${line}`),
      signal: opts.signal,
      timeoutMs: opts.timeoutMs ?? PACKAGES_TIMEOUT_MS,
      stderrLines: 40,
    });
    return { stdout: r.stdout, stderr: r.stderr };
  } finally {
    await releaseMachineName(identity.machineName);
    const after = lstatOrUndefined(resolvConf);
    if (opts.hostDns && !hadResolvConf && after?.isFile() && after.size === 0) rmSync(resolvConf);
  }
}

function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file);
  } catch {
    return undefined;
  }
}

/** Mirror lines for a Debian base: the config's, else the host's sources for that suite. */
export function debianMirrors(
  base: Extract<Base, { type: 'debian' }>,
  hostSourcesFile = HOST_SOURCES,
): string[] {
  if (base.mirrors && base.mirrors.length > 0) return [...base.mirrors];
  if (!existsSync(hostSourcesFile)) return [];
  return hostMirrorLines(readFileSync(hostSourcesFile, 'utf8'), base.suite);
}

/** Cache key of a Debian base: everything that decides its content. */
export function debianBaseKey(input: {
  arch: string;
  suite: string;
  variant: string;
  packages: readonly string[];
  mirrors: readonly string[];
}): string {
  const canonical = JSON.stringify({
    arch: input.arch,
    suite: input.suite,
    variant: input.variant,
    packages: [...new Set(input.packages)].sort(),
    mirrors: input.mirrors,
  });
  return createHash('sha256').update(canonical).digest('hex');
}

/**
 * The Debian base as a tarball made by mmdebstrap, cached by its inputs (it takes minutes under
 * QEMU). Returns the tarball's path.
 */
export async function debianBaseTarball(
  base: Extract<Base, { type: 'debian' }>,
  arch: string,
  opts: { logger: Logger; signal?: AbortSignal; basesDir?: string; hostSourcesFile?: string },
): Promise<string> {
  const debArch = DEBIAN_ARCH[arch];
  if (!debArch) throw new ConfigError(`base: no Debian architecture for arch ${arch}`);
  const mirrors = debianMirrors(base, opts.hostSourcesFile);
  const key = debianBaseKey({
    arch: debArch,
    suite: base.suite,
    variant: base.variant,
    packages: base.packages,
    mirrors,
  });
  const dir = opts.basesDir ?? path.join(cacheDir(), 'bases');
  const out = path.join(dir, `${key}.tar`);
  if (existsSync(out)) {
    opts.logger.info(
      `debian base ${base.suite} (${base.packages.join(', ') || 'no extra packages'}): cached ${out}`,
    );
    return out;
  }
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.tmp-${key}-${process.pid}.tar`);
  opts.logger.info(
    `debian base: mmdebstrap ${base.suite} ${debArch} with ${base.packages.join(', ') || 'no extra packages'}` +
      ` (${mirrors.length ? 'host apt sources' : "mmdebstrap's default mirror"}; takes minutes under QEMU)`,
  );
  try {
    await run(
      mmdebstrapArgv({
        arch: debArch,
        suite: base.suite,
        variant: base.variant,
        packages: base.packages,
        output: tmp,
        mirrors,
      }),
      {
        privileged: true,
        logger: opts.logger,
        loud: true,
        signal: opts.signal,
        timeoutMs: MMDEBSTRAP_TIMEOUT_MS,
        stderrLines: 40,
      },
    );
    await rename(tmp, out);
  } finally {
    await rm(tmp, { force: true });
  }
  return out;
}

async function tarballPath(
  base: Extract<Base, { type: 'tarball' }>,
  opts: AssembleRootOptions,
): Promise<string> {
  if (base.path) {
    try {
      if (!(await stat(base.path)).isFile())
        throw new ConfigError(`base.path: ${base.path} is not a file`);
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new ConfigError(
        `base.path: cannot read ${base.path} (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      );
    }
    if (base.sha256) {
      const actual = await sha256File(base.path);
      if (actual !== base.sha256) {
        throw new UserError(
          `base.path: ${base.path} has sha256 ${actual}, but the config expects ${base.sha256}`,
        );
      }
    }
    return base.path;
  }
  return opts.store.fetch({ urls: base.urls ?? [], sha256: base.sha256! }, { signal: opts.signal });
}

function describeExtract(s: ExtractSummary): string {
  const skipped = s.skipped.devices + s.skipped.fifos + s.skipped.other;
  return (
    `${s.files} files, ${s.dirs} dirs, ${s.symlinks} symlinks, ${s.hardlinks} hardlinks, ${s.bytes} bytes` +
    (skipped
      ? `; skipped ${s.skipped.devices} device nodes, ${s.skipped.fifos} fifos, ${s.skipped.other} other`
      : '') +
    (s.setidStripped ? `; setuid/setgid removed from ${s.setidStripped}` : '')
  );
}

/** Creates `ctx.work.root`, which must not exist yet. */
export async function assembleRoot(
  ctx: StageContext,
  { config, ...input }: RootStageInput,
): Promise<AssembledRoot> {
  const opts: AssembleRootOptions = {
    ...input,
    store: ctx.store,
    logger: ctx.logger,
    signal: ctx.signal,
  };
  const { logger } = opts;
  const root = ctx.work.root;
  const base = config.base;
  if (config.prepare !== undefined && base.type === 'scratch') {
    throw new ConfigError(
      'prepare: a scratch base has no shell or package manager to run it; use a tarball or debian base',
    );
  }
  try {
    await logger.group(`root: ${base.type} base`, async () => {
      if (base.type === 'scratch') {
        await makeScratchRoot(root);
        return;
      }
      const tarball =
        base.type === 'tarball'
          ? await tarballPath(base, opts)
          : await debianBaseTarball(base, config.arch, opts);
      const s = await extractTarball(tarball, root, { logger });
      logger.info(`extracted ${path.basename(tarball)}: ${describeExtract(s)}`);
      for (const d of NSPAWN_DIRS) ensureDir(root, d, d === '/tmp' ? 0o1777 : 0o755);
    });

    if (config.prepare !== undefined) {
      const prepare = config.prepare;
      await logger.group('root: prepare', async () => {
        for (const w of config.warnings) logger.warn(w);
        if (typeof prepare === 'string' && !existsInRoot(root, '/bin/sh')) {
          throw new ConfigError(
            'prepare: the base root has no /bin/sh to run the command with; give the command as a list (argv) instead',
          );
        }
        await runInRoot(root, prepareCommand(prepare), {
          logger,
          signal: opts.signal,
          hostDns: true,
        });
      });
    }

    await logger.group('root: overlay', async () => {
      for (const [i, f] of config.files.entries()) {
        let st;
        try {
          st = lstatSync(f.src);
        } catch (e) {
          throw new ConfigError(
            `files[${i}].src: cannot read ${f.src} (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
          );
        }
        if (st.isDirectory()) {
          const c = await copyTree(root, f.src, f.dst);
          if (f.mode !== undefined) ensureDirMode(root, f.dst, f.mode);
          logger.info(
            `${f.dst}/: ${c.files} files, ${c.dirs} dirs, ${c.symlinks} symlinks from ${f.src}`,
          );
        } else if (st.isFile()) {
          await installFile(root, f.src, f.dst, f.mode ?? normalizedMode(st));
          logger.info(`${f.dst} from ${f.src}`);
        } else {
          throw new ConfigError(`files[${i}].src: ${f.src} is neither a file nor a directory`);
        }
      }
      if (opts.luaPath) {
        const dst = config.lua?.path ?? '/bin/lua';
        await installFile(root, opts.luaPath, dst, 0o755);
        logger.info(`${dst}: static Lua from ${opts.luaPath}`);
      }
      ensureDir(root, config.data.path, 0o755);
      if (config.data.template) {
        let st;
        try {
          st = lstatSync(config.data.template);
        } catch (e) {
          throw new ConfigError(
            `data.template: cannot read ${config.data.template} (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
          );
        }
        if (!st.isDirectory())
          throw new ConfigError(`data.template: ${config.data.template} is not a directory`);
        const c = await copyTree(root, config.data.template, config.data.path);
        logger.info(`${config.data.path}: data template with ${c.files} files, ${c.dirs} dirs`);
      }
    });
    const baseBytes = treeBytes(root);
    logger.info(`root assembled at ${root}: ${baseBytes} bytes`);
    return { root, baseBytes };
  } catch (e) {
    // A half-built root must never be mistaken for a finished one. nspawn may have made
    // root-owned files in it, so remove it with privilege, and never let a failed removal
    // hide the error that got us here.
    await removeTree([root], { reject: false }).catch(() => undefined);
    throw e;
  }
}

function existsInRoot(root: string, p: string): boolean {
  try {
    // Follows in-root symlinks (Alpine's /bin/sh -> /bin/busybox) without touching the host's /.
    return resolveInRoot(root, p).exists;
  } catch {
    return false;
  }
}

function ensureDirMode(root: string, dst: string, mode: number): void {
  chmodSync(ensureDir(root, dst), mode & 0o1777);
}
