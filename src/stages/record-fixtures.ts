/**
 * `lhc build --update-fixtures`: each probe's response from the traced, unpruned run becomes its
 * fixture where the file is missing or differs, like a snapshot the user then reviews and commits.
 * Verify still compares the pruned image with these files, so a pruning mistake fails the build.
 *
 * lhc runs as root and a pull request controls the config: a fixture path is confined to the
 * project when the config is loaded (config/confine.ts) and checked again here just before
 * writing, the parent directories are created inside the project only, and the file is written
 * through core/safe-write.ts (staged beside it with O_EXCL|O_NOFOLLOW, renamed into place, so a
 * symlink at the fixture's path is replaced, never written through).
 */
import { chown, mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { MAX_FIXTURE_BYTES, pathProblem, projectRoot } from '../config/confine.js';
import type { LhcConfig } from '../config/load.js';
import { UserError } from '../core/errors.js';
import type { StageContext } from '../core/stage.js';
import { writeOutputFile } from '../core/safe-write.js';
import type { ProbeResponse } from '../harness/client.js';

export interface RecordedFixture {
  probe: string;
  /** Absolute path of the fixture file. */
  path: string;
  bytes: number;
  change: 'new' | 'changed' | 'unchanged';
}

async function current(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Creates the missing directories of `dir` one by one, refusing any step that leaves the project. */
async function mkdirInside(root: string, dir: string): Promise<void> {
  const rel = path.relative(root, dir);
  let cur = root;
  for (const part of rel.split(path.sep).filter(Boolean)) {
    cur = path.join(cur, part);
    await mkdir(cur, { mode: 0o755 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    const problem = await pathProblem(root, cur, 'dir', { mustExist: true });
    if (problem) throw new UserError(`cannot record a fixture under ${dir}: ${problem}`);
  }
}

/** lhc may run as root (sudo) on a user's checkout: a recorded fixture belongs to the directory's owner. */
async function giveToDirOwner(file: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const dir = await stat(path.dirname(file));
  if (dir.uid !== 0) await chown(file, dir.uid, dir.gid);
}

/**
 * Writes every probe's traced response into its fixture where it is missing or differs and logs
 * each write (path, bytes, new or changed). http probes record their body; a status other than
 * the probe's `status` is only warned about (it is not part of a fixture).
 */
export async function recordFixtures(
  ctx: StageContext,
  { config, responses }: { config: LhcConfig; responses: Record<string, ProbeResponse> },
): Promise<RecordedFixture[]> {
  const { logger } = ctx;
  const root = await projectRoot(config.dir);
  const out: RecordedFixture[] = [];
  const writes: { fixture: RecordedFixture; body: Buffer; shown: string; existed: boolean }[] = [];
  // Several probes may share one fixture (the same error page): they must agree on its bytes.
  // Everything is checked before the first write, so a refusal leaves every fixture as it was.
  const claimed = new Map<string, { probe: string; body: Buffer }>();
  for (const [i, probe] of config.probes.entries()) {
    const got = responses[probe.name];
    if (!got) throw new Error(`no traced response for probe '${probe.name}'`);
    if (probe.type === 'http' && got.status !== probe.status)
      logger.warn(
        `probe '${probe.name}': the traced run answered HTTP ${got.status}, the probe expects status ${probe.status} (not a fixture: change status: in the config if that is right)`,
      );
    if (!probe.fixture) continue;
    const field = `probes[${i}].fixture`;
    if (got.body.length > MAX_FIXTURE_BYTES)
      throw new UserError(
        `${field}: the traced response of probe '${probe.name}' is ${got.body.length} bytes, more than a fixture may hold (${MAX_FIXTURE_BYTES} bytes)`,
      );
    const file = probe.fixture;
    const shown = path.relative(config.dir, file) || file;
    const problem = await pathProblem(root, file, 'file', { maxBytes: MAX_FIXTURE_BYTES });
    if (problem) throw new UserError(`${field}: ${problem}`);
    const earlier = claimed.get(file);
    if (earlier && !earlier.body.equals(got.body))
      throw new UserError(
        `${field}: probes '${earlier.probe}' and '${probe.name}' share the fixture ${shown} but answered differently in the traced run; give them separate fixtures`,
      );
    const before = earlier ? got.body : await current(file);
    claimed.set(file, { probe: probe.name, body: got.body });
    const change = before === undefined ? 'new' : before.equals(got.body) ? 'unchanged' : 'changed';
    const fixture: RecordedFixture = {
      probe: probe.name,
      path: file,
      bytes: got.body.length,
      change,
    };
    out.push(fixture);
    if (change === 'unchanged') logger.debug(`fixture ${shown}: unchanged (probe '${probe.name}')`);
    else writes.push({ fixture, body: got.body, shown, existed: before !== undefined });
  }
  for (const { fixture, body, shown, existed } of writes) {
    const file = fixture.path;
    await mkdirInside(root, path.dirname(file));
    const mode = existed ? (await stat(file)).mode & 0o777 : 0o644;
    await writeOutputFile(file, body, { mode, logger });
    await giveToDirOwner(file);
    logger.info(
      `fixture ${shown}: ${fixture.change}, ${fixture.bytes} bytes written (probe '${fixture.probe}')`,
    );
  }
  const written = out.filter((f) => f.change !== 'unchanged').length;
  logger.info(
    `--update-fixtures: ${written} fixture${written === 1 ? '' : 's'} written, ${out.length - written} unchanged; review them like snapshots before committing`,
  );
  return out;
}
