/**
 * The `fetch` stage: every remote input a config declares (urls + sha256), brought into the
 * content-addressed store. Later stages ask the store for the same sha256 and never touch the
 * network again.
 */
import type { LhcConfig } from '../config/load.js';
import type { Logger } from '../core/logger.js';
import type { FetchInput, FetchOptions, Store } from '../store/store.js';
import { defaultLuaUrls } from './lua.js';

export interface FetchedInput {
  name: string;
  sha256: string;
  path: string;
}

/** The config's remote inputs, in pipeline order (Lua source, then the base tarball). */
export function configInputs(
  config: Pick<LhcConfig, 'lua' | 'base'>,
): (FetchInput & { name: string })[] {
  const inputs: (FetchInput & { name: string })[] = [];
  if (config.lua) {
    inputs.push({
      name: `lua-${config.lua.version}.tar.gz`,
      urls: config.lua.urls ?? defaultLuaUrls(config.lua.version),
      sha256: config.lua.sha256,
      maxBytes: config.lua['max-bytes'],
    });
  }
  const base = config.base;
  if (base.type === 'tarball' && base.urls && base.sha256) {
    inputs.push({
      name: 'base tarball',
      urls: base.urls,
      sha256: base.sha256,
      maxBytes: base['max-bytes'],
    });
  }
  return inputs;
}

export async function fetchInputs(
  config: Pick<LhcConfig, 'lua' | 'base'>,
  opts: { store: Store; logger: Logger; fetch?: FetchOptions },
): Promise<FetchedInput[]> {
  const out: FetchedInput[] = [];
  for (const input of configInputs(config)) {
    out.push({
      name: input.name,
      sha256: input.sha256,
      path: await opts.store.fetch(input, opts.fetch),
    });
  }
  return out;
}
