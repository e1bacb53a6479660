import { loadConfig } from '../../config/load.js';
import { fetchInputs } from '../../stages/fetch.js';
import { withScratchContext } from '../../core/stage.js';
import { configOrDefault, type Command } from '../command.js';

export const fetchCommand: Command = {
  name: 'fetch',
  summary: 'download and verify every input of an lhc.yml into the store',
  help: `Usage: lhc fetch [CONFIG]

Brings every remote input of CONFIG (default: ./lhc.yml), that is the Lua source and a base
tarball given by urls, into the content-addressed store ($LHC_CACHE_DIR/store, default
~/.cache/lhc/store), each checked against its sha256. Inputs already in the store are not
downloaded again. Prints one line per input: "<sha256>  <name>  <path>".`,
  positionals: { min: 0, max: 1, names: 'CONFIG' },
  async run({ positionals }, ctx) {
    const file = configOrDefault(positionals[0], 'fetch');
    const config = await loadConfig(file);
    const fetched = await withScratchContext({ logger: ctx.logger, signal: ctx.signal }, (stage) =>
      fetchInputs(stage, { config }),
    );
    if (fetched.length === 0) ctx.logger.info(`${file}: no remote inputs`);
    for (const f of fetched) ctx.out(`${f.sha256}  ${f.name}  ${f.path}`);
    return 0;
  },
};
