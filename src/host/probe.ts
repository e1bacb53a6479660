/**
 * What doctor and setup need to know about the host, behind an interface so their decisions can be
 * tested with a fake host (no root, no QEMU) and the real one only answers questions.
 */
import { access, readFile, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isRoot, run } from '../tools/exec.js';

export interface HostProbe {
  fileExists(file: string): Promise<boolean>;
  /** File contents, or undefined when it does not exist or cannot be read. */
  readFile(file: string): Promise<string | undefined>;
  /** Names in a directory, or [] when it does not exist. */
  listDir(dir: string): Promise<string[]>;
  /** Absolute path of a tool on PATH, or undefined. */
  which(tool: string): Promise<string | undefined>;
  isRoot(): boolean;
  /** True when `sudo -n true` succeeds (passwordless sudo). */
  sudoOk(): Promise<boolean>;
  /** Machine architecture as `uname -m` prints it: x86_64, aarch64, ... */
  arch(): string;
  /** Foreign architectures dpkg knows (`dpkg --print-foreign-architectures`). */
  foreignArchs(): Promise<string[]>;
  /** Which of these Debian packages (name or name:arch) are installed. */
  installedPackages(packages: readonly string[]): Promise<Set<string>>;
}

/** Directories searched when PATH lacks sbin (a normal user's PATH on Debian). */
const EXTRA_PATH = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

export const realProbe: HostProbe = {
  async fileExists(file) {
    try {
      await access(file);
      return true;
    } catch {
      return false;
    }
  },
  async readFile(file) {
    try {
      return await readFile(file, 'utf8');
    } catch {
      return undefined;
    }
  },
  async listDir(dir) {
    try {
      return (await readdir(dir)).sort();
    } catch {
      return [];
    }
  },
  async which(tool) {
    const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...EXTRA_PATH];
    for (const d of dirs) {
      const candidate = path.join(d, tool);
      try {
        await access(candidate, 1 /* X_OK */);
        return candidate;
      } catch {
        // Not in this directory.
      }
    }
    return undefined;
  },
  isRoot,
  async sudoOk() {
    try {
      const r = await run(['sudo', '-n', 'true'], { reject: false, timeoutMs: 10_000 });
      return r.exitCode === 0;
    } catch {
      return false; // sudo itself is missing.
    }
  },
  arch() {
    return os.machine();
  },
  async foreignArchs() {
    try {
      const r = await run(['dpkg', '--print-foreign-architectures'], { reject: false });
      return r.stdout
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
    } catch {
      return [];
    }
  },
  async installedPackages(packages) {
    const native = (await run(['dpkg', '--print-architecture'])).stdout.trim();
    // Unknown names make dpkg-query exit 1, but it still lists every name it knows.
    const r = await run(
      ['dpkg-query', '-W', '-f=${Package}|${Architecture}|${db:Status-Status}\n', ...packages],
      {
        reject: false,
      },
    );
    return installedFrom(r.stdout, packages, native);
  },
};

/**
 * Which wanted names are installed, from `dpkg-query -W -f='${Package}|${Architecture}|${db:Status-Status}\n'`.
 * A name without `:arch` means the native architecture (or `all`): with musl-dev:arm64 installed,
 * plain `musl-dev` is still missing.
 */
export function installedFrom(
  listing: string,
  wanted: readonly string[],
  native: string,
): Set<string> {
  const installed = new Set<string>();
  const rows = listing
    .split('\n')
    .map((l) => l.split('|'))
    .filter((f) => f.length === 3 && f[2] === 'installed');
  for (const name of wanted) {
    const [pkg, arch] = name.split(':');
    const archs = arch ? [arch] : [native, 'all'];
    if (rows.some(([p, a]) => p === pkg && archs.includes(a!))) installed.add(name);
  }
  return installed;
}
