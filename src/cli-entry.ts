/** Entry point of the `lhc` binary (dist/cli.js). */
import { main } from './cli/main.js';
import { installSignalHandlers } from './tools/signals.js';

process.exit(await main(process.argv.slice(2), { signal: installSignalHandlers() }));
