/** How an error that reached the CLI is shown: as text on stderr, and as the `error` of --json. */
import { ToolError, UserError } from '../core/errors.js';

/** The message and exit code for an error that reached the shell. */
export function reportError(e: unknown): { message: string; exitCode: number } {
  if (e instanceof UserError) return { message: `error: ${e.message}`, exitCode: e.exitCode };
  if (e instanceof ToolError) return { message: `error: ${e.message}`, exitCode: 1 };
  const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
  return { message: `unexpected error (a bug in lhc): ${detail}`, exitCode: 1 };
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
  const { exitCode } = reportError(e);
  if (e instanceof UserError) {
    return { kind: exitCode === 2 ? 'usage' : 'user', message: e.message, exitCode };
  }
  if (e instanceof ToolError) {
    return { kind: 'tool', message: e.reason, exitCode, command: e.command, stderr: e.stderrTail };
  }
  return { kind: 'bug', message: e instanceof Error ? e.message : String(e), exitCode };
}
