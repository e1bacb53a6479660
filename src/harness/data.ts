/**
 * The data partition a container run gets: seeded from the root's own data path (trace,
 * self-check) or unpacked from the packed data template (verify).
 */
import { chmod, mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import * as tar from 'tar';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { resolveTraced } from '../root/lookup.js';
import type { Owner } from '../stages/data-template.js';
import { run } from '../tools/exec.js';

/**
 * A fresh data dir for one run: the root's own data path contents, then the config's template.
 * Owned as the packed template will be (see data-template.ts): the top directory by `topOwner`
 * (service.user's ids; root when undefined), everything in it by root, so the traced run and the
 * self-check see the same permissions as verify and the board.
 */
export async function seedDataDir(
  config: LhcConfig,
  root: string,
  dir: string,
  topOwner?: Owner,
): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const inRoot = resolveTraced(root, config.data.path);
  if (inRoot.exists && inRoot.kind === 'dir' && (await readdir(inRoot.host)).length > 0) {
    await run(['cp', '-a', '--', `${inRoot.host}/.`, `${dir}/`], { privileged: true });
  }
  // data.template is not copied again here: the root stage already put it at the data path
  // with normalized modes, and a second copy from the checkout would bring its umask back.
  // -R before the top: a package's own owner (Debian's redis:redis) would not survive packing.
  await run(['chown', '-hR', '0:0', '--', dir], { privileged: true });
  if (topOwner)
    await run(['chown', `${topOwner.uid}:${topOwner.gid}`, '--', dir], { privileged: true });
}

/**
 * Unpacks the data template (.tar.gz written by the pack stage with npm tar) with its modes
 * exactly as packed (1777, 0600, 0777), whatever the umask. Paths stay inside `dir`
 * (npm tar refuses absolute paths and `..` unless preservePaths is set). Owners come from the
 * archive, set by one privileged `chown -h` per owner after unpacking: npm tar itself leaves
 * symlinks to the unpacking user, and a non-root caller could not chown at all.
 */
export async function unpackTemplate(
  template: string,
  dir: string,
  opts: { logger?: Logger } = {},
): Promise<void> {
  const warnings: string[] = [];
  const owners = new Map<string, string[]>();
  const modes: { file: string; mode: number }[] = [];
  try {
    await tar.x({
      file: template,
      cwd: dir,
      strict: true,
      chmod: true,
      // npm tar leaves new files to the umask (0777 comes out 0755): modes are set below.
      preserveOwner: false,
      onwarn: (code, message) => warnings.push(`${code}: ${message}`),
      onReadEntry: (e) => {
        if (e.type !== 'SymbolicLink' && e.mode !== undefined) {
          modes.push({ file: path.resolve(dir, e.path), mode: e.mode & 0o7777 });
        }
        if (e.uid === undefined || e.gid === undefined) return;
        const key = `${e.uid}:${e.gid}`;
        const list = owners.get(key) ?? [];
        list.push(path.resolve(dir, e.path));
        owners.set(key, list);
      },
    });
  } catch (e) {
    throw new UserError(`cannot unpack the data template ${template}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (warnings.length) throw new UserError(`data template ${template}: ${warnings.join('; ')}`);
  // Exact modes while the files are still ours (chown then clears setuid/setgid on files, which
  // a nosuid data partition ignores anyway).
  for (const { file, mode } of modes) await chmod(file, mode);
  for (const [owner, paths] of owners) {
    for (let i = 0; i < paths.length; i += 200) {
      await run(['chown', '-h', owner, '--', ...paths.slice(i, i + 200)], {
        privileged: true,
        logger: opts.logger,
        timeoutMs: 60_000,
      });
    }
  }
}
