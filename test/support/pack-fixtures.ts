/**
 * Inputs and assertions for the pack, reproducibility and deploy-bundle tests: a real aarch64
 * busybox (Debian's busybox-static:arm64), a gophermoon-shaped root built from the example's
 * content, and the checks that two builds are byte-identical and the image fits the budget.
 */
import { existsSync } from 'node:fs';
import {
  chmod,
  copyFile,
  cp,
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { debianDeb, extractDeb, sha256File, testCacheDir } from './debian-inputs.js';

export const REPO = path.resolve(import.meta.dirname, '../..');
export const GOPHERMOON = path.join(REPO, 'examples/gophermoon');

/** The gophermoon image must stay within this many bytes (issue 6: ≤ 150 KB). */
export const IMAGE_BUDGET_BYTES = 150_000;

/** Fails with a message naming the package when a host tool is missing (integration tests never skip). */
/** /bin/busybox from busybox-static:arm64, extracted once into the test cache. */
export async function arm64Busybox(): Promise<string> {
  const dest = path.join(testCacheDir(), 'extracted', 'busybox-static-arm64', 'busybox');
  if (existsSync(dest)) return dest;
  const deb = await debianDeb('busybox-static:arm64');
  await mkdir(path.dirname(dest), { recursive: true });
  const tmp = await mkdtemp(path.join(path.dirname(dest), '.tmp-'));
  try {
    await extractDeb(deb, tmp);
    await rename(path.join(tmp, 'bin/busybox'), dest);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return dest;
}

/** Mount points a read-only root must already have (nspawn and runc cannot create them). */
export const MOUNT_POINTS = ['data', 'dev', 'proc', 'sys', 'usr', 'run', 'tmp'];

/**
 * A root shaped like the pruned gophermoon root: the example's /gopher content and
 * /bin/gophermoon, mount points, and an aarch64 static ELF at /bin/lua (busybox standing in
 * until the Lua stage's static Lua is wired in by the lead).
 */
export async function gophermoonLikeRoot(dir: string): Promise<string> {
  await mkdir(path.join(dir, 'bin'), { recursive: true });
  for (const m of MOUNT_POINTS) await mkdir(path.join(dir, m), { recursive: true });
  await cp(path.join(GOPHERMOON, 'content'), path.join(dir, 'gopher'), { recursive: true });
  await copyFile(path.join(GOPHERMOON, 'gophermoon.lua'), path.join(dir, 'bin/gophermoon'));
  await chmod(path.join(dir, 'bin/gophermoon'), 0o644);
  await copyFile(await arm64Busybox(), path.join(dir, 'bin/lua'));
  await chmod(path.join(dir, 'bin/lua'), 0o755);
  await chmod(dir, 0o755);
  return dir;
}

/** A data directory with the modes that matter: a sticky world-writable tmp and a private dir. */
export async function sampleDataDir(dir: string): Promise<string> {
  await mkdir(path.join(dir, 'tmp'), { recursive: true });
  await chmod(path.join(dir, 'tmp'), 0o1777);
  await mkdir(path.join(dir, 'state'), { recursive: true });
  await chmod(path.join(dir, 'state'), 0o700);
  await writeFile(path.join(dir, 'state/hits'), '0\n');
  await chmod(dir, 0o755);
  return dir;
}

/** Asserts that every named file is byte-identical in both directories. */
export async function expectIdenticalArtifacts(
  dirA: string,
  dirB: string,
  files: readonly string[],
): Promise<void> {
  for (const f of files) {
    const [a, b] = [await readFile(path.join(dirA, f)), await readFile(path.join(dirB, f))];
    expect(a.length, `${f}: size`).toBe(b.length);
    expect(await sha256File(path.join(dirA, f)), `${f}: sha256`).toBe(
      await sha256File(path.join(dirB, f)),
    );
  }
}

/** Asserts the image is within the budget (the lead calls this on the real gophermoon build). */
export async function expectImageWithinBudget(
  image: string,
  budget = IMAGE_BUDGET_BYTES,
): Promise<number> {
  const bytes = (await stat(image)).size;
  expect(bytes, `${path.basename(image)} is ${bytes} bytes, budget ${budget}`).toBeLessThanOrEqual(
    budget,
  );
  return bytes;
}

/** `ls -l` style permission string, as unsquashfs -lln prints it. */
export function lsMode(type: string, mode: string): string {
  const t =
    { dir: 'd', symlink: 'l', file: '-', char: 'c', block: 'b', fifo: 'p', socket: 's' }[type] ??
    '?';
  const m = parseInt(mode, 8);
  const rwx = (shift: number, special: boolean, ch: string) => {
    const bits = (m >> shift) & 7;
    const x = bits & 1;
    const exec = special ? (x ? ch : ch.toUpperCase()) : x ? 'x' : '-';
    return (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + exec;
  };
  return (
    t +
    rwx(6, (m & 0o4000) !== 0, 's') +
    rwx(3, (m & 0o2000) !== 0, 's') +
    rwx(0, (m & 0o1000) !== 0, 't')
  );
}
