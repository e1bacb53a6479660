/** How an error that reached the CLI is shown: as text on stderr, and as the `error` of --json. */
import { ToolError, UserError, describeError, exitCodeOf } from '../core/errors.js';

/** The message and exit code for an error that reached the shell. */
export function reportError(e: unknown): { message: string; exitCode: number } {
  const known = e instanceof UserError || e instanceof ToolError;
  return {
    message: `${known ? 'error' : 'unexpected error (a bug in lhc)'}: ${describeError(e)}`,
    exitCode: exitCodeOf(e),
  };
}

export interface ErrorJson {
  /** usage: bad argument or config (exit 2); user: the user's to fix; tool: an external command failed; bug: lhc's fault. */
  kind: 'usage' | 'user' | 'tool' | 'bug';
  message: string;
  exitCode: number;
  /** For kind "tool": the command line and the last lines of its stderr. */
  command?: string;
  stderr?: string;
}

/** The `error` member of a failed command's --json object. */
export function errorJson(e: unknown): ErrorJson {
  const exitCode = exitCodeOf(e);
  if (e instanceof UserError) {
    return { kind: exitCode === 2 ? 'usage' : 'user', message: e.message, exitCode };
  }
  if (e instanceof ToolError) {
    return { kind: 'tool', message: e.reason, exitCode, command: e.command, stderr: e.stderrTail };
  }
  return { kind: 'bug', message: e instanceof Error ? e.message : String(e), exitCode };
}
