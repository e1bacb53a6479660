/**
 * Checks, before tracing, that the kernel can start the service's entrypoint in the assembled
 * root: an ELF for the configured architecture whose loader (PT_INTERP) is in the root, or a
 * `#!` script whose interpreter passes the same check. Without it a wrong-architecture or
 * dynamically linked binary on a scratch base fails deep in the trace (`Could not open
 * '/lib/ld-linux-aarch64.so.1'`, an empty QEMU_STRACE) instead of saying what to change.
 * Every path is resolved inside the root, never through the host's `/`.
 */
import { lstat, open } from 'node:fs/promises';
import { UserError } from '../core/errors.js';
import type { StageContext } from '../core/stage.js';
import { EM_AARCH64, EM_X86_64, readElf, type ElfInfo } from '../elf/elf.js';
import { ResolveError, resolveInRoot } from '../root/resolve.js';

export type EntrypointArch = 'aarch64' | 'x86_64';

const MACHINE = { aarch64: EM_AARCH64, x86_64: EM_X86_64 } as const;

/** Linux reads at most this much of a `#!` line (BINPRM_BUF_SIZE). */
const SHEBANG_MAX = 256;
/** Linux gives up after this many nested interpreters (BINPRM_MAX_RECURSION + the program). */
const MAX_INTERPRETERS = 5;

export class EntrypointError extends UserError {
  constructor(
    message: string,
    /** The path was not found in the root (as opposed to found but unusable). */
    readonly missing = false,
  ) {
    super(message);
  }
}

/** The interpreter path of a `#!` line as the kernel splits it, undefined for other files. */
export function shebangInterpreter(head: Buffer): string | undefined {
  if (head.length < 2 || head[0] !== 0x23 || head[1] !== 0x21) return undefined;
  const line = head.subarray(2, SHEBANG_MAX).toString('latin1').split('\n')[0]!;
  return line.trim().split(/[ \t]/)[0] ?? '';
}

async function readHead(file: string): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(SHEBANG_MAX);
    const { bytesRead } = await fh.read(buf, 0, SHEBANG_MAX, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Resolves `p` inside `root`; the error names the chain that led to it. */
async function resolveFile(root: string, p: string, what: string): Promise<string> {
  const missing = () =>
    new EntrypointError(
      `${what}: ${p} is not in the root: add it (files, base.packages or a base that has it)`,
      true,
    );
  let host: string;
  try {
    const r = resolveInRoot(root, p);
    if (!r.exists) throw missing();
    host = r.host;
  } catch (e) {
    if (!(e instanceof ResolveError)) throw e;
    if (e.reason === 'missing') throw missing();
    throw new EntrypointError(`${what}: ${e.message}`);
  }
  const st = await lstat(host);
  if (!st.isFile()) throw new EntrypointError(`${what}: ${p} is not a regular file`);
  return host;
}

function checkElf(elf: ElfInfo, p: string, arch: EntrypointArch, what: string): void {
  if (elf.machine !== MACHINE[arch]) {
    throw new EntrypointError(
      `${what}: ${p} is an ELF for ${elf.machineName}, but arch is ${arch}: use a build of it for ${arch}, or set arch to the machine the board has`,
    );
  }
  if (elf.bits !== 64) {
    throw new EntrypointError(
      `${what}: ${p} is a ${elf.bits}-bit ELF; images for ${arch} run 64-bit code: use a 64-bit build`,
    );
  }
  if (elf.type !== 'EXEC' && elf.type !== 'DYN')
    throw new EntrypointError(`${what}: ${p} is an ELF ${elf.type} file, not an executable`);
}

/**
 * Throws an EntrypointError (a UserError naming `service.command[0]`) when `command0` cannot be
 * started in `root` on `arch`; returns the chain of files the kernel would load, in order.
 */
export interface EntrypointCheckInput {
  root: string;
  /** service.command[0]. */
  command0: string;
  arch: EntrypointArch;
}

export async function checkEntrypoint(
  _ctx: StageContext,
  { root, command0, arch }: EntrypointCheckInput,
): Promise<string[]> {
  const chain: string[] = [];
  let p = command0;
  let what = `service.command[0] ${command0}`;
  for (;;) {
    if (chain.length >= MAX_INTERPRETERS)
      throw new EntrypointError(`${what}: too many nested #! interpreters (${chain.join(' → ')})`);
    const host = await resolveFile(root, p, what);
    chain.push(p);
    if (((await lstat(host)).mode & 0o111) === 0) {
      throw new EntrypointError(
        `${what}: ${p} is not executable: give it an executable mode (e.g. mode: "0755" in files)`,
      );
    }
    const head = await readHead(host);
    const interpreter = shebangInterpreter(head);
    if (interpreter !== undefined) {
      if (!interpreter.startsWith('/')) {
        throw new EntrypointError(
          `${what}: the #! line of ${p} names "${interpreter}", not an absolute path: write the interpreter's full path`,
        );
      }
      what = `${what} (a script for ${interpreter})`;
      p = interpreter;
      continue;
    }
    const elf = await readElf(host);
    if (!elf) {
      throw new EntrypointError(
        `${what}: ${p} is neither an ELF executable nor a script starting with #!, so it cannot be executed`,
      );
    }
    checkElf(elf, p, arch, what);
    if (elf.interp !== undefined) {
      const loaderWhat = `${what}: ${p} is dynamically linked and needs its loader ${elf.interp}`;
      let loader: string;
      try {
        loader = await resolveFile(root, elf.interp, loaderWhat);
      } catch (e) {
        if (!(e instanceof EntrypointError && e.missing)) throw e;
        throw new EntrypointError(
          `${loaderWhat}, which the root lacks: use a statically linked build, or a base that has the loader (the distribution the binary was built for)`,
        );
      }
      const loaderElf = await readElf(loader);
      if (!loaderElf)
        throw new EntrypointError(
          `${loaderWhat}, but ${elf.interp} in the root is not an ELF file`,
        );
      checkElf(loaderElf, elf.interp, arch, loaderWhat);
      chain.push(elf.interp);
    }
    return chain;
  }
}
