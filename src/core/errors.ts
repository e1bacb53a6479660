/**
 * Two error kinds, so the shells can decide how loud to be:
 * a UserError is the user's to fix (bad config, bad input, fixture mismatch) and is shown as its
 * message alone; a ToolError is an external command that failed and carries what is needed to
 * debug it without re-running.
 */
export class UserError extends Error {
  override readonly name = 'UserError';
  /** Exit code the CLI uses: 2 for usage/config errors, 1 for everything else. */
  readonly exitCode: number;
  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.exitCode = options.exitCode ?? 1;
  }
}

/** A config or usage problem: exit code 2. */
export class ConfigError extends UserError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { exitCode: 2, cause: options.cause });
  }
}

export class ToolError extends Error {
  override readonly name = 'ToolError';
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderrTail: string,
    readonly reason: string,
  ) {
    super(
      `${reason}: ${command}` +
        (exitCode === undefined ? '' : ` (exit code ${exitCode})`) +
        (stderrTail ? `\n${stderrTail}` : ''),
    );
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** The exit code the shells use: a user error's own (2 for usage/config), else 1. */
export function exitCodeOf(e: unknown): number {
  return e instanceof UserError ? e.exitCode : 1;
}

/** Message for a human: user errors without a stack, anything else with what it carries. */
export function describeError(e: unknown): string {
  if (e instanceof UserError || e instanceof ToolError) return e.message;
  if (e instanceof Error) return e.stack ?? e.message;
  return String(e);
}
