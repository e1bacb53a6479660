/**
 * Stages log through this interface and never import @actions/core, so the CLI, the action and
 * the tests can each decide where lines go.
 */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  debug(message: string): void;
  /** Runs fn inside a named, timed group (a log group in Actions, a heading on a terminal). */
  group<T>(name: string, fn: () => Promise<T>): Promise<T>;
}

/** For tests and library use: swallows everything but keeps the lines for assertions. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => void lines.push(m),
    warn: (m) => void lines.push(`warning: ${m}`),
    debug: () => {},
    group: async (name, fn) => {
      lines.push(`==> ${name}`);
      return fn();
    },
  };
}
