/**
 * Which host features one config needs, so `lhc doctor CONFIG` checks only those: a scratch base
 * without Lua needs no cross compiler and no mmdebstrap.
 */
import type { LhcConfigRaw } from '../config/schema.js';
import { isAarch64, type Feature } from './requirements.js';

type ConfigShape = Pick<LhcConfigRaw, 'arch' | 'lua' | 'base' | 'service' | 'epoch'>;

export interface ConfigNeeds {
  features: Set<Feature>;
  /** Each feature the config needs, with the config field that asks for it. */
  reasons: Map<Feature, string>;
}

export function featuresFor(config: ConfigShape, hostArch: string): ConfigNeeds {
  const reasons = new Map<Feature, string>();
  const need = (f: Feature, why: string) => {
    if (!reasons.has(f)) reasons.set(f, why);
  };
  need('core', 'every build');
  need('privilege', 'every build (mounts and containers)');
  const foreign = isAarch64(config.arch) !== isAarch64(hostArch);
  if (isAarch64(config.arch)) {
    if (foreign) need('emulation', `arch: ${config.arch} on this ${hostArch} host`);
    else need('native-trace', `arch: ${config.arch} on this ${hostArch} host`);
  }
  if (config.lua) {
    if (config.lua.strategy === 'in-root') need('debian-root', 'lua.strategy: in-root');
    else {
      need('cross-lua', 'lua (strategy: cross)');
      if (!isAarch64(config.arch))
        need('cross-lua-x86_64', `lua (strategy: cross) for arch: ${config.arch}`);
    }
    if (config.lua.urls === undefined || config.lua.urls.some((u) => /^https?:/.test(u)))
      need('download', 'lua (downloads the source)');
  }
  if (config.base.type === 'debian') need('debian-root', 'base.type: debian');
  if (config.base.type === 'tarball' && config.base.urls?.some((u) => /^https?:/.test(u)))
    need('download', 'base.urls');
  if (config.service.inetd) need('inetd', 'service.inetd: true');
  if (config.service.listen !== undefined)
    need('listen', `service.listen: ${config.service.listen}`);
  if (config.epoch === undefined) need('git-epoch', 'no epoch: builds are dated by git');
  need('system', 'every build');
  return { features: new Set(reasons.keys()), reasons };
}
