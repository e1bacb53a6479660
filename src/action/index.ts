/** Entry point of the action (dist/index.js). */
import { installSignalHandlers } from '../tools/signals.js';
import { run } from './main.js';

await run(installSignalHandlers());
