import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { loadConfig } from '../../config/load.js';
import { ConfigError } from '../../core/errors.js';
import { configInputs } from '../../stages/fetch.js';
import { formatBytes } from '../../store/download.js';
import { Store } from '../../store/store.js';
import type { Command } from '../command.js';

/** What a store entry is, as far as a config tells: its input name and where it comes from. */
interface Known {
  name: string;
  urls: readonly string[];
}

async function knownInputs(
  configs: readonly string[],
  onDefaultUnreadable?: (e: unknown) => void,
): Promise<Map<string, Known>> {
  const known = new Map<string, Known>();
  for (const file of configs) {
    let config;
    try {
      config = await loadConfig(file);
    } catch (e) {
      // An explicit --config must load; the implicit ./lhc.yml only adds names when it can.
      if (!onDefaultUnreadable) throw e;
      onDefaultUnreadable(e);
      continue;
    }
    for (const i of configInputs(config)) {
      if (!known.has(i.sha256)) known.set(i.sha256, { name: i.name, urls: i.urls });
    }
  }
  return known;
}

export const storeCommand: Command = {
  name: 'store',
  summary: 'import files into the content-addressed store, or list it',
  help: `Usage: lhc store add FILE...
       lhc store list [--config CONFIG]...

add   copies each FILE into the store ($LHC_CACHE_DIR/store, default ~/.cache/lhc/store) under
      its sha256 and prints "<sha256>  <FILE>" (sha256sum's format). Use it to provide inputs
      offline: a config input with that sha256 is then taken from the store, never downloaded.
list  prints one line per file in the store: "<sha256>  <size>  <name>  <url>". The store keeps
      only content, so name and url come from the configs (--config, repeatable; default
      ./lhc.yml when it exists) whose inputs have that sha256, else "-".

Options:
  --config CONFIG   (list) a config whose inputs name the store's files`,
  options: { config: { type: 'string', multiple: true, complete: 'file' } },
  positionals: { min: 1, names: 'a subcommand "add" or "list"', complete: ['add', 'list'] },
  async run({ options, positionals }, ctx) {
    const [sub, ...rest] = positionals;
    const store = new Store(undefined, ctx.logger);
    const configs = (options.config ?? []) as string[];
    if (sub === 'add') {
      if (rest.length === 0)
        throw new ConfigError('lhc store add: missing FILE (see: lhc store --help)');
      if (configs.length > 0)
        throw new ConfigError('lhc store add: --config is for "list" (see: lhc store --help)');
      for (const file of rest) ctx.out(`${await store.add(file)}  ${file}`);
      return 0;
    }
    if (sub === 'list') {
      if (rest.length > 0)
        throw new ConfigError(
          `lhc store list: unexpected argument "${rest[0]}" (see: lhc store --help)`,
        );
      const implicit = configs.length === 0 && existsSync('lhc.yml');
      const known = await knownInputs(
        implicit ? ['lhc.yml'] : configs,
        implicit
          ? (e) => ctx.logger.warn(`lhc.yml not used for names: ${(e as Error).message}`)
          : undefined,
      );
      const shas = await store.list();
      if (shas.length === 0) ctx.logger.info(`store ${store.dir} is empty`);
      for (const sha of shas) {
        const { size } = await stat(store.path(sha));
        const k = known.get(sha);
        ctx.out([sha, formatBytes(size).padStart(9), k?.name ?? '-', k?.urls[0] ?? '-'].join('  '));
      }
      return 0;
    }
    throw new ConfigError(
      `lhc store: expected a subcommand "add" or "list", got "${sub}" (see: lhc store --help)`,
    );
  },
};
