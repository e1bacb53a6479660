import { runCleanups } from '../core/cleanup.js';
import { killAllGroups } from './exec.js';

/** A cleanup that hangs (a busy mount) must not keep a cancelled run alive forever. */
const CLEANUP_LIMIT_MS = 30_000;

/**
 * On Ctrl-C or a runner's cancel, take down every process group lhc started (containers, QEMU,
 * compilers run in their own groups and would otherwise outlive us), undo what the stages set
 * up (mounts, loop devices, tmpfs), then exit.
 */
export function installSignalHandlers(
  write: (text: string) => void = (t) => void process.stderr.write(t),
): void {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      write(`\nlhc: ${signal}: stopping child processes\n`);
      killAllGroups('SIGKILL');
      setTimeout(() => process.exit(code), CLEANUP_LIMIT_MS).unref();
      void runCleanups()
        .then((errors) => {
          for (const e of errors) write(`lhc: cleanup failed: ${e.message}\n`);
        })
        .finally(() => process.exit(code));
    });
  }
}
