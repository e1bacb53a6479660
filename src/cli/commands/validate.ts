import { checkConfigFiles } from '../../config/check-files.js';
import { loadConfig } from '../../config/load.js';
import { parseArgs, type Command } from '../command.js';

export const validateCommand: Command = {
  name: 'validate',
  summary: 'check lhc.yml files against the schema',
  help: `Usage: lhc validate CONFIG...

Reads each config and checks it against the lhc.yml schema. Every problem is reported with its
field path and line, e.g. "lua.sha256: expected 64 hex characters (lhc.yml:7)". Files the
config names (files[].src, data.template, base.path, probe fixtures) must be readable.
Exits 0 when all configs are valid, 2 otherwise.`,
  async run(args, ctx) {
    const { positionals } = parseArgs(
      args,
      { positionals: { min: 1, names: 'CONFIG' } },
      'lhc validate',
    );
    for (const file of positionals) {
      const c = await loadConfig(file);
      await checkConfigFiles(c);
      const lua = c.lua ? `lua ${c.lua.version}` : 'no lua';
      ctx.out(
        `${file}: ok (${c.name}, ${c.arch}, base ${c.base.type}, ${lua}, ${c.probes.length} probe${c.probes.length === 1 ? '' : 's'})`,
      );
    }
    return 0;
  },
};
