import { ConfigError } from '../../core/errors.js';
import { Store } from '../../store/store.js';
import { parseArgs, type Command } from '../command.js';

export const storeCommand: Command = {
  name: 'store',
  summary: 'import files into the content-addressed store, or list it',
  help: `Usage: lhc store add FILE...
       lhc store list

add   copies each FILE into the store ($LHC_CACHE_DIR/store, default ~/.cache/lhc/store) under
      its sha256 and prints "<sha256>  <FILE>" (sha256sum's format). Use it to provide inputs
      offline: a config input with that sha256 is then taken from the store, never downloaded.
list  prints the sha256 of every file in the store.`,
  async run(args, ctx) {
    const [sub, ...rest] = args;
    const store = new Store(undefined, ctx.logger);
    if (sub === 'add') {
      const { positionals } = parseArgs(
        rest,
        { positionals: { min: 1, names: 'FILE' } },
        'lhc store add',
      );
      for (const file of positionals) ctx.out(`${await store.add(file)}  ${file}`);
      return 0;
    }
    if (sub === 'list') {
      parseArgs(rest, {}, 'lhc store list');
      for (const sha of await store.list()) ctx.out(sha);
      return 0;
    }
    throw new ConfigError(
      `lhc store: expected a subcommand "add" or "list"${sub ? `, got "${sub}"` : ''} (see: lhc store --help)`,
    );
  },
};
