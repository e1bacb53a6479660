/**
 * The files a config names must exist before minutes of building start: a typo in a fixture path
 * should fail at once, not after the trace, and `lhc validate` should catch it too.
 */
import { access, constants } from 'node:fs/promises';
import { ConfigError } from '../core/errors.js';
import type { LhcConfig } from './load.js';

async function problem(file: string): Promise<string | undefined> {
  try {
    await access(file, constants.R_OK);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

/** Throws one ConfigError listing every named file that cannot be read. */
export async function checkConfigFiles(config: LhcConfig): Promise<void> {
  const named: { field: string; file: string }[] = [];
  config.files.forEach((f, i) => named.push({ field: `files[${i}].src`, file: f.src }));
  if (config.data.template) named.push({ field: 'data.template', file: config.data.template });
  if (config.base.type === 'tarball' && config.base.path)
    named.push({ field: 'base.path', file: config.base.path });
  config.probes.forEach((p, i) => {
    if (p.fixture) named.push({ field: `probes[${i}].fixture`, file: p.fixture });
  });
  const errors: string[] = [];
  for (const { field, file } of named) {
    const code = await problem(file);
    if (code) errors.push(`${field}: cannot read ${file} (${code})`);
  }
  if (errors.length > 0) throw new ConfigError(errors.join('\n'));
}
