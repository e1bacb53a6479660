/** Entry point of the `lhc` binary (dist/cli.js). */
import { main } from './cli/main.js';
import { installSignalHandlers } from './tools/signals.js';

installSignalHandlers();
process.exit(await main(process.argv.slice(2)));
