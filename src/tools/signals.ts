import { runCleanups } from '../core/cleanup.js';
import { killAllGroups } from './exec.js';

/**
 * GitHub cancels a job with SIGINT, then SIGTERM 7.5 s later, then SIGKILL: everything we undo
 * (containers, mounts, loop devices) must be undone inside that window, so the cleanup gets a
 * little less and the process exits when it is over, done or not.
 */
export const CLEANUP_BUDGET_MS = 6_500;

/**
 * The one cancellation path. On SIGINT or SIGTERM: abort the returned signal (the shells pass it
 * to every stage, so no new process starts and every wait ends), kill every process group lhc
 * started (containers, QEMU and compilers would otherwise outlive us), run the registered
 * cleanups (the stages' own `finally` blocks share them), then exit with 128 + the signal.
 * A second signal while cleaning up is noted and otherwise ignored: the budget bounds the wait.
 */
export function installSignalHandlers(
  write: (text: string) => void = (t) => void process.stderr.write(t),
): AbortSignal {
  const controller = new AbortController();
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(signal, () => {
      if (controller.signal.aborted) {
        write(`lhc: ${signal}: still cleaning up (at most ${CLEANUP_BUDGET_MS / 1000} s)\n`);
        return;
      }
      write(`\nlhc: ${signal}: stopping child processes and cleaning up\n`);
      controller.abort(new Error(`interrupted by ${signal}`));
      killAllGroups('SIGKILL');
      setTimeout(() => {
        write(`lhc: cleanup did not finish within ${CLEANUP_BUDGET_MS / 1000} s; exiting\n`);
        process.exit(code);
      }, CLEANUP_BUDGET_MS).unref();
      void runCleanups()
        .then((errors) => {
          for (const e of errors) write(`lhc: cleanup failed: ${e.message}\n`);
        })
        .finally(() => process.exit(code));
    });
  }
  return controller.signal;
}
