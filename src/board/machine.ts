/**
 * A simulated board: a Debian root booted with systemd as PID 1 in `systemd-nspawn -b`, with its
 * own network namespace (it keeps CAP_NET_ADMIN there, so its services' PrivateNetwork= gets a
 * working `lo`) and the host's loop devices passed in (the deploy bundle loop-mounts its image).
 * Commands run on it the way a root shell on the board would, through nsenter into its
 * namespaces. poweroff() shuts it down and proves nothing of it is left: no process, no mount
 * under its directory, no loop device it attached.
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { ToolError, UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { run, start, tail, type RunResult, type Started } from '../tools/exec.js';
import { descendants, processTable } from '../harness/proc.js';
import { removeTree } from '../tools/remove-tree.js';
import { createOwnDir } from '../core/build-dirs.js';
import { waitFor } from '../core/wait.js';

export interface BootOptions {
  /** Uncompressed tarball of the board's root (see root.ts). */
  tarball: string;
  /** The board's root is unpacked into <workDir>/root; workDir must be empty or absent. */
  workDir: string;
  logger: Logger;
  signal?: AbortSignal;
  /** Milliseconds to wait for systemd to finish booting; default 120 s. */
  bootTimeoutMs?: number;
}

/** Loop devices the board needs at once: the image, the data file, a new image during an upgrade. */
const LOOPS_NEEDED = 3;

/** All namespaces of the board's PID 1, and its root and working directory: a shell on the board. */
const NSENTER_FLAGS = ['-m', '-u', '-i', '-n', '-p', '-C', '-r', '-w'] as const;

export interface LoopDevice {
  name: string;
  backingFile: string;
  /** The backing file's inode and file system device ("major:minor"), as the kernel holds them. */
  backingInode: string;
  backingDevice: string;
}

export async function listLoops(): Promise<LoopDevice[]> {
  const r = await run(
    ['losetup', '--list', '--noheadings', '--raw', '-O', 'NAME,BACK-INO,BACK-MAJ:MIN,BACK-FILE'],
    { privileged: true },
  );
  return parseLoopList(r.stdout);
}

/** `losetup --list --raw -O NAME,BACK-INO,BACK-MAJ:MIN,BACK-FILE` (the file last: it may hold spaces). */
export function parseLoopList(text: string): LoopDevice[] {
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const [name, ino, dev, ...rest] = l.trim().split(' ');
      return {
        name: name!,
        backingInode: ino ?? '',
        backingDevice: dev ?? '',
        backingFile: rest.join(' '),
      };
    });
}

/** "major:minor" of a stat() dev number (Linux's encoding). */
export function majorMinor(dev: number): string {
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  return `${major}:${minor}`;
}

/**
 * Whether a loop device is backed by a file of the board rooted at `root`. Inside the board a
 * backing file shows as `/var/lib/lhc/...` (its mount is not reachable from the host's root),
 * which every board's loops share: compare the file's identity, so one board's teardown never
 * detaches another's loop devices.
 */
export function backedByBoard(l: LoopDevice, root: string): boolean {
  if (l.backingFile.startsWith(`${root}/`)) return true;
  if (!l.backingFile.startsWith('/var/lib/lhc/')) return false;
  try {
    const st = statSync(path.join(root, l.backingFile));
    return String(st.ino) === l.backingInode && majorMinor(st.dev) === l.backingDevice;
  } catch {
    return false;
  }
}

/** Every /dev/loopN node of the host; the board gets them all (the kernel picks the free one). */
export function hostLoopNodes(): string[] {
  return readdirSync('/dev')
    .filter((n) => /^loop\d+$/.test(n))
    .sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
    .map((n) => `/dev/${n}`);
}

export function bootArgv(root: string, loops: readonly string[]): string[] {
  return [
    'systemd-nspawn',
    '--boot',
    `--directory=${root}`,
    '--register=no',
    '--keep-unit',
    '--console=pipe',
    // The board's own network: its port is reached through nsenter, and it keeps CAP_NET_ADMIN
    // there, which its systemd needs to bring up `lo` in a service's PrivateNetwork= namespace.
    '--private-network',
    '--bind=/dev/loop-control',
    ...loops.map((l) => `--bind=${l}`),
  ];
}

export class Board {
  private constructor(
    readonly root: string,
    readonly workDir: string,
    /** The board's PID 1 (systemd), as the host sees it. */
    readonly pid: number,
    private readonly nspawn: Started,
    private readonly loopsBefore: Set<string>,
    private readonly logger: Logger,
  ) {}

  /** Seconds from starting nspawn to `systemctl is-system-running` settling. */
  bootSeconds = 0;

  static async boot(o: BootOptions): Promise<Board> {
    // Removed whole at poweroff: only a directory lhc made (or found empty) may be.
    await createOwnDir('board work dir', o.workDir);
    const root = path.join(o.workDir, 'root');
    await mkdir(root);
    await run(['tar', '-xpf', o.tarball, '--numeric-owner', '-C', root], {
      privileged: true,
      logger: o.logger,
      signal: o.signal,
    });
    const loops = hostLoopNodes();
    const before = await listLoops();
    const free = loops.length - before.filter((l) => loops.includes(l.name)).length;
    if (free < LOOPS_NEEDED)
      throw new UserError(
        `the board needs ${LOOPS_NEEDED} free loop devices and the host has ${free} (${loops.length} nodes, see losetup -a)`,
      );
    const started = Date.now();
    const nspawn = start(bootArgv(root, loops), { privileged: true, logger: o.logger, loud: true });
    let exited = false;
    void nspawn.exited.then(() => (exited = true));
    const init = await waitFor(
      () =>
        exited ? null : descendants(nspawn.pid, processTable()).find((p) => p.comm === 'systemd'),
      30_000,
      o.signal,
    );
    if (!init) {
      await nspawn.stop();
      const out = await nspawn.exited;
      await removeTree([o.workDir], { reject: false });
      throw new UserError(
        `the board did not boot (systemd-nspawn -b):\n${tail(out.stderr + out.stdout, 20)}`,
      );
    }
    const board = new Board(
      root,
      o.workDir,
      init.pid,
      nspawn,
      new Set(before.map((l) => l.name)),
      o.logger,
    );
    // Until PID 1 has its private socket up, systemctl cannot ask it anything (and says "offline"
    // when it cannot reach it at all, seen on a loaded machine): retry till then.
    const deadline = Date.now() + (o.bootTimeoutMs ?? 120_000);
    let state: RunResult;
    for (;;) {
      state = await board.sh(['systemctl', 'is-system-running', '--wait'], {
        timeoutMs: Math.max(1000, deadline - Date.now()),
        signal: o.signal,
      });
      const answer = state.stdout.trim();
      if ((answer && answer !== 'offline') || Date.now() > deadline || exited) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    board.bootSeconds = (Date.now() - started) / 1000;
    const status = state.stdout.trim();
    o.logger.info(`board booted in ${board.bootSeconds.toFixed(1)} s (${status})`);
    if (status !== 'running' && status !== 'degraded') {
      const log = await board.sh(['journalctl', '-b', '--no-pager', '-n', '40']);
      await board.poweroff();
      throw new UserError(
        `the board did not finish booting (${status || state.stderr.trim()}):\n${log.stdout}`,
      );
    }
    return board;
  }

  /** argv run on the board as root, like a root shell there (its PATH, its /, its network). */
  sh(
    argv: readonly string[],
    opts: { timeoutMs?: number; signal?: AbortSignal; input?: string } = {},
  ): Promise<RunResult> {
    return run(['nsenter', '-t', String(this.pid), ...NSENTER_FLAGS, '--', ...argv], {
      privileged: true,
      logger: this.logger,
      reject: false,
      timeoutMs: opts.timeoutMs ?? 120_000,
      signal: opts.signal,
      input: opts.input,
      env: { SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0', LC_ALL: 'C' },
    });
  }

  /** Like sh() but a non-zero exit is an error that shows the command's output. */
  async mustSh(argv: readonly string[], what: string, timeoutMs?: number): Promise<RunResult> {
    const r = await this.sh(argv, { timeoutMs });
    if (r.exitCode !== 0)
      throw new UserError(
        `${what} failed on the board (exit ${r.exitCode}):\n${tail(r.stdout + r.stderr, 30)}`,
      );
    return r;
  }

  /** argv run in the board's network namespace only (host programs reaching the board's ports). */
  inNetwork(argv: readonly string[]): string[] {
    return ['nsenter', '-t', String(this.pid), '-n', '--', ...argv];
  }

  /** The host path of a path on the board. */
  hostPath(p: string): string {
    return path.join(this.root, p);
  }

  /** Copies a host directory to `dest` on the board, as a person copying build output would. */
  async copyIn(src: string, dest: string): Promise<void> {
    await run(['mkdir', '-p', this.hostPath(path.dirname(dest))], { privileged: true });
    await removeTree([this.hostPath(dest)]);
    await run(['cp', '-a', src, this.hostPath(dest)], { privileged: true, logger: this.logger });
  }

  /** Journal lines of units that failed, plus those of the units matching `patterns`. */
  async journal(patterns: readonly string[], lines = 40): Promise<string> {
    const failed = await this.sh(['systemctl', 'list-units', '--failed', '--plain', '--no-legend']);
    const names = failed.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0]!)
      .filter(Boolean);
    const units = [...new Set([...names, ...patterns])];
    if (units.length === 0) return '';
    const r = await this.sh([
      'journalctl',
      '--no-pager',
      '-o',
      'short-monotonic',
      '-n',
      String(lines),
      ...units.flatMap((u) => ['-u', u]),
    ]);
    return (names.length ? `failed units: ${names.join(', ')}\n` : '') + r.stdout.trimEnd();
  }

  private poweredOff = false;

  /**
   * Shuts the board down (systemctl poweroff, then nspawn's own SIGTERM handling, then SIGKILL)
   * and removes its root. Throws when a process, mount or loop device of the board survived.
   */
  async poweroff(timeoutMs = 60_000): Promise<void> {
    if (this.poweredOff) return;
    this.poweredOff = true;
    await this.sh(['systemctl', 'poweroff'], { timeoutMs: 10_000 }).catch(() => undefined);
    const done = await Promise.race([
      this.nspawn.exited.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), timeoutMs).unref()),
    ]);
    if (!done) {
      this.logger.warn(`the board did not power off within ${timeoutMs / 1000} s; stopping it`);
      await this.nspawn.stop(10_000);
    }
    const left: string[] = [];
    const procs = descendants(this.nspawn.pid, processTable());
    if (procs.length) left.push(`processes: ${procs.map((p) => `${p.pid} ${p.comm}`).join(', ')}`);
    const ours = (l: LoopDevice) => !this.loopsBefore.has(l.name) && backedByBoard(l, this.root);
    const key = (l: LoopDevice) => `${l.name} ${l.backingDevice} ${l.backingInode}`;
    const loops = (await listLoops()).filter(ours);
    // Autoclear frees a loop device once its last mount is gone; give the kernel a moment. A
    // device freed and taken by someone else meanwhile has another backing file: not ours.
    for (let i = 0; i < 20 && loops.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const now = new Set((await listLoops()).filter(ours).map(key));
      for (let j = loops.length - 1; j >= 0; j--) if (!now.has(key(loops[j]!))) loops.splice(j, 1);
    }
    if (loops.length) {
      left.push(`loop devices: ${loops.map((l) => `${l.name} (${l.backingFile})`).join(', ')}`);
      for (const l of loops)
        await run(['losetup', '-d', l.name], { privileged: true, reject: false });
    }
    const mounts = (await run(['cat', '/proc/mounts'])).stdout
      .split('\n')
      .filter((l) => l.split(' ')[1]?.startsWith(this.root));
    if (mounts.length) left.push(`mounts: ${mounts.join('; ')}`);
    if (left.length === 0) await removeTree([this.workDir]);
    if (left.length)
      throw new ToolError(
        'systemd-nspawn --boot',
        undefined,
        left.join('\n'),
        'the board left things behind',
      );
  }
}
