/** What every stage of a build gets besides its own input. */
import type { Store } from '../store/store.js';
import type { Logger } from './logger.js';
import type { WorkLayout } from './work-layout.js';

export interface StageContext {
  logger: Logger;
  /** Aborted on SIGINT/SIGTERM (the shells own the controller); stages pass it to every process. */
  signal?: AbortSignal;
  store: Store;
  work: WorkLayout;
  /** Where the artifacts go. */
  outDir: string;
  env: NodeJS.ProcessEnv;
}
