/**
 * The files a config names must exist before minutes of building start: a typo in a fixture path
 * should fail at once, not after the trace, and `lhc validate` should catch it too. They are checked
 * again against the project's bounds (confine.ts), since the tree may have changed since loading.
 * A fixture that does not exist yet is fine when it is about to be recorded (--update-fixtures).
 */
import { ConfigError } from '../core/errors.js';
import { namedPaths, pathProblem, projectRoot } from './confine.js';
import type { LhcConfig } from './load.js';

/** How a missing fixture is reported: the way to create it. */
export const RECORD_FIXTURES_HINT =
  'record it from the traced run with `lhc build --update-fixtures` (action input update-fixtures: true)';

export interface CheckFilesOptions {
  /** Fixtures will be recorded by this build: a missing one is not an error. */
  updateFixtures?: boolean;
}

/** Throws one ConfigError listing every named file that cannot be read or may not be used. */
export async function checkConfigFiles(
  config: LhcConfig,
  opts: CheckFilesOptions = {},
): Promise<void> {
  const root = await projectRoot(config.dir);
  const errors: string[] = [];
  for (const p of namedPaths(config)) {
    const fixture = p.at[0] === 'probes';
    const problem = await pathProblem(root, p.value, p.kind, {
      maxBytes: p.maxBytes,
      mustExist: !(fixture && opts.updateFixtures),
    });
    if (problem)
      errors.push(
        `${p.field}: ${problem}${fixture && problem.endsWith('(ENOENT)') ? `; ${RECORD_FIXTURES_HINT}` : ''}`,
      );
  }
  if (errors.length > 0) throw new ConfigError(errors.join('\n'));
}
