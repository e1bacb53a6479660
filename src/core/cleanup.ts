/**
 * Cleanups that must run even when the process is told to stop. A stage registers what it set
 * up (mounts, loop devices, containers) and runs it in its own `finally`; the shells' SIGTERM/
 * SIGINT handler calls runCleanups() (after killAllGroups()) before exiting, so an interrupted
 * run leaves nothing behind either. Each cleanup runs at most once: the `finally` and the
 * signal handler share the same promise.
 */

type CleanupFn = () => Promise<void>;

export interface CleanupHandle {
  /** Runs the cleanup (once; later calls return the same promise) and unregisters it. */
  run(): Promise<void>;
}

interface Entry {
  name: string;
  fn: CleanupFn;
  promise?: Promise<void>;
}

const pending: Entry[] = [];

function runOnce(entry: Entry): Promise<void> {
  entry.promise ??= (async () => {
    try {
      await entry.fn();
    } finally {
      const i = pending.indexOf(entry);
      if (i !== -1) pending.splice(i, 1);
    }
  })();
  return entry.promise;
}

export function registerCleanup(name: string, fn: CleanupFn): CleanupHandle {
  const entry: Entry = { name, fn };
  pending.push(entry);
  return { run: () => runOnce(entry) };
}

/** Names of the cleanups still registered (for tests and diagnostics). */
export function pendingCleanups(): string[] {
  return pending.map((e) => e.name);
}

/**
 * Runs every registered cleanup, newest first (what was set up last is torn down first), and
 * waits for all of them; a failing cleanup does not stop the others. Returns the errors.
 */
export async function runCleanups(): Promise<Error[]> {
  const errors: Error[] = [];
  for (const entry of [...pending].reverse()) {
    try {
      await runOnce(entry);
    } catch (e) {
      errors.push(e instanceof Error ? e : new Error(String(e)));
    }
  }
  return errors;
}
