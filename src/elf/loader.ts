/**
 * What the dynamic loader and the kernel will look for when a kept file runs: the library
 * directories of the root's own loader (musl's .path file or glibc's ld.so.conf) and a script's
 * `#!` interpreter. Prune uses these to complete the closure of every kept ELF and script.
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { globToRegExp } from '../root/glob.js';
import { resolveTraced } from '../root/lookup.js';
import type { ElfInfo } from './elf.js';

const TRIPLETS: Record<string, string> = {
  aarch64: 'aarch64-linux-gnu',
  x86_64: 'x86_64-linux-gnu',
  arm: 'arm-linux-gnueabihf',
};
const MUSL_ARCH: Record<string, string> = { aarch64: 'aarch64', x86_64: 'x86_64', arm: 'armhf' };

/** The library directories the root's dynamic loader searches, in its order. */
export function libraryDirs(root: string, elf: ElfInfo, elfPath: string): string[] {
  const dirs: string[] = [];
  const origin = path.posix.dirname(elfPath);
  for (const r of elf.runpath) dirs.push(r.replace(/\$\{?ORIGIN\}?/g, origin));
  const musl = elf.interp !== undefined && /ld-musl/.test(elf.interp);
  if (musl) {
    const pathFile = resolveTraced(
      root,
      `/etc/ld-musl-${MUSL_ARCH[elf.machineName] ?? elf.machineName}.path`,
    );
    if (pathFile.exists && pathFile.kind === 'file') {
      dirs.push(
        ...readFileSync(pathFile.host, 'utf8')
          .split(/[:\n]/)
          .map((s) => s.trim())
          .filter(Boolean),
      );
    } else dirs.push('/lib', '/usr/local/lib', '/usr/lib');
    return dirs;
  }
  dirs.push(...ldSoConfDirs(root, '/etc/ld.so.conf', 0));
  const triplet = TRIPLETS[elf.machineName];
  if (triplet) dirs.push(`/lib/${triplet}`, `/usr/lib/${triplet}`);
  if (elf.bits === 64) dirs.push('/lib64', '/usr/lib64');
  dirs.push('/lib', '/usr/lib');
  return [...new Set(dirs)];
}

/** Directories listed in ld.so.conf, following its `include` lines (globs) inside the root. */
function ldSoConfDirs(root: string, file: string, depth: number): string[] {
  if (depth > 8) return [];
  const r = resolveTraced(root, file);
  if (!r.exists || r.kind !== 'file') return [];
  const dirs: string[] = [];
  for (const raw of readFileSync(r.host, 'utf8').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const inc = /^include\s+(.+)$/.exec(line);
    if (!inc) {
      if (line.startsWith('/')) dirs.push(line);
      continue;
    }
    const pattern = inc[1]!.startsWith('/')
      ? inc[1]!
      : path.posix.join(path.posix.dirname(file), inc[1]!);
    const dir = resolveTraced(root, path.posix.dirname(pattern));
    if (!dir.exists || dir.kind !== 'dir') continue;
    const re = globToRegExp(pattern);
    for (const name of readdirSync(dir.host).sort()) {
      const candidate = path.posix.join(path.posix.dirname(pattern), name);
      if (re.test(candidate)) dirs.push(...ldSoConfDirs(root, candidate, depth + 1));
    }
  }
  return dirs;
}

/** The interpreter named by a `#!` line, if the file starts with one. */
export function shebang(file: string): string | undefined {
  let head: Buffer;
  try {
    const fd = openSync(file, 'r');
    try {
      head = Buffer.alloc(256);
      head = head.subarray(0, readSync(fd, head, 0, head.length, 0));
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  if (head[0] !== 0x23 || head[1] !== 0x21) return undefined;
  const line = head.toString('latin1').slice(2).split('\n')[0]!.trim();
  const interpreter = line.split(/\s+/)[0];
  return interpreter?.startsWith('/') ? interpreter : undefined;
}
