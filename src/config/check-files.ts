/**
 * The files a config names must exist before minutes of building start: a typo in a fixture path
 * should fail at once, not after the trace, and `lhc validate` should catch it too. They are checked
 * again against the project's bounds (confine.ts), since the tree may have changed since loading.
 */
import { ConfigError } from '../core/errors.js';
import { namedPaths, pathProblem, projectRoot } from './confine.js';
import type { LhcConfig } from './load.js';

/** Throws one ConfigError listing every named file that cannot be read or may not be used. */
export async function checkConfigFiles(config: LhcConfig): Promise<void> {
  const root = await projectRoot(config.dir);
  const errors: string[] = [];
  for (const p of namedPaths(config)) {
    const problem = await pathProblem(root, p.value, p.kind, {
      maxBytes: p.maxBytes,
      mustExist: true,
    });
    if (problem) errors.push(`${p.field}: ${problem}`);
  }
  if (errors.length > 0) throw new ConfigError(errors.join('\n'));
}
