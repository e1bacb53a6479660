import { killAllGroups } from './exec.js';

/**
 * On Ctrl-C or a runner's cancel, take down every process group lhc started (containers, QEMU,
 * compilers run in their own groups and would otherwise outlive us), then exit.
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
      process.exit(code);
    });
  }
}
