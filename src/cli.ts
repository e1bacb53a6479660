/**
 * The CLI shell: argv in, exit code out. It only dispatches to commands and decides how loud an
 * error is; the work is in the commands and the stages they drive.
 */
import { ToolError, UserError } from './core/errors.js';
import { consoleLogger, type Logger } from './core/logger.js';
import { LHC_VERSION } from './core/version.js';
import { wantsHelp, type Command } from './cli/command.js';
import { commands as registered } from './cli/commands/index.js';

export interface MainIo {
  logger?: Logger;
  /** stdout for command results. */
  out?: (line: string) => void;
  /** stderr for errors. */
  err?: (line: string) => void;
  commands?: readonly Command[];
  /** The shell's cancellation signal, handed to the command. */
  signal?: AbortSignal;
}

export function topLevelHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'lhc: build reproducible, minimal, hardened aarch64 images for systemd-nspawn boards',
    '',
    'Usage: lhc <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run "lhc <command> --help" for a command\'s options.',
    'Exit codes: 0 ok, 1 failure, 2 usage or config error.',
  ].join('\n');
}

/** The message and exit code for an error that reached the shell. */
export function reportError(e: unknown): { message: string; exitCode: number } {
  if (e instanceof UserError) return { message: `error: ${e.message}`, exitCode: e.exitCode };
  if (e instanceof ToolError) return { message: `error: ${e.message}`, exitCode: 1 };
  const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
  return { message: `unexpected error (a bug in lhc): ${detail}`, exitCode: 1 };
}

export async function main(argv: readonly string[], io: MainIo = {}): Promise<number> {
  const out = io.out ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const err = io.err ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const logger = io.logger ?? consoleLogger();
  const commands = io.commands ?? registered;
  const [name, ...rest] = argv;

  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? commands.find((c) => c.name === rest[0]) : undefined;
    out(topic ? topic.help : topLevelHelp(commands));
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    out(VERSION);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    err(
      `error: unknown command "${name}" (commands: ${commands.map((c) => c.name).join(', ')}; see: lhc --help)`,
    );
    return 2;
  }
  if (wantsHelp(rest)) {
    out(command.help);
    return 0;
  }
  try {
    return await command.run(rest, { logger, out, ...(io.signal ? { signal: io.signal } : {}) });
  } catch (e) {
    const r = reportError(e);
    err(r.message);
    return r.exitCode;
  }
}

/** esbuild replaces this with package.json's version; under tsx it reads "dev". */
const VERSION = LHC_VERSION;
