/**
 * The `fetch` stage: every remote input a config declares (urls + sha256), brought into the
 * content-addressed store. Later stages ask the store for the same sha256 and never touch the
 * network again.
 */
import type { LhcConfig } from '../config/load.js';
import type { StageContext } from '../core/stage.js';
import type { FetchInput, FetchOptions } from '../store/store.js';
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

export interface FetchStageInput {
  config: Pick<LhcConfig, 'lua' | 'base'>;
  fetch?: FetchOptions;
}

export async function fetchInputs(
  ctx: StageContext,
  { config, fetch }: FetchStageInput,
): Promise<FetchedInput[]> {
  const out: FetchedInput[] = [];
  for (const input of configInputs(config)) {
    out.push({
      name: input.name,
      sha256: input.sha256,
      path: await ctx.store.fetch(input, fetch),
    });
  }
  return out;
}
