/**
 * The contract every `lhc` subcommand implements. A command declares its options and
 * positionals as data; the shell parses argv against that table with node:util parseArgs, so
 * flags, `--help`, `--json`, `--verbose`/`--quiet` and usage errors behave the same in every
 * command, and the shell completions are generated from the same table.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs as parseWithNode } from 'node:util';
import { ConfigError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

export interface CommandContext {
  /** Progress and diagnostics (stderr). */
  logger: Logger;
  /** The command's result for the user or a script (stdout); one call per line. */
  out(line: string): void;
  /** Aborted on SIGINT/SIGTERM (see tools/signals.ts); pass it to every stage. */
  signal?: AbortSignal;
  /** True with --json: the command writes exactly one JSON object through `emitJson()` and nothing else to stdout. */
  json: boolean;
  /** Writes the command's one JSON object to stdout. */
  emitJson(value: unknown): void;
  /** True when stdout may carry ANSI colour (a TTY, NO_COLOR unset, not --json). */
  colour: boolean;
  /** The whole command table (for completion scripts). */
  commands: readonly Command[];
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** One-letter alias, e.g. `o` for `-o DIR`. */
  short?: string;
  /** Repeatable (`--url A --url B`); the value is then a list. */
  multiple?: boolean;
  /** What the value is, for shell completion: a file, a directory, or one of these words. */
  complete?: 'file' | 'dir' | readonly string[];
}

export interface PositionalSpec {
  /** Minimum and maximum count (max undefined = unlimited). */
  min: number;
  max?: number;
  /** How usage errors name them, e.g. "CONFIG". */
  names?: string;
  /** For shell completion: files (the default) or these words (subcommands, shells). */
  complete?: 'file' | readonly string[];
}

export interface Command {
  name: string;
  /** One line for the command list in `lhc --help`. */
  summary: string;
  /** Full text for `lhc <name> --help`, starting with the usage line. */
  help: string;
  options?: Record<string, OptionSpec>;
  positionals?: PositionalSpec;
  /** The command accepts --json. */
  json?: boolean;
  /** Returns the exit code: 0 ok, 1 failure, 2 usage or config error. */
  run(args: ParsedArgs, ctx: CommandContext): Promise<number>;
}

export interface ParsedArgs {
  options: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** Options every command takes; the shell acts on them before the command runs. */
export const COMMON_OPTIONS: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h' },
  verbose: { type: 'boolean', short: 'v' },
  quiet: { type: 'boolean', short: 'q' },
};
export const JSON_OPTION: Record<string, OptionSpec> = { json: { type: 'boolean' } };

/** Every option a command accepts, its own and the common ones. */
export function allOptions(command: Pick<Command, 'options' | 'json'>): Record<string, OptionSpec> {
  return { ...command.options, ...COMMON_OPTIONS, ...(command.json ? JSON_OPTION : {}) };
}

/** True when the user asked for help before any `--`. */
export function wantsHelp(args: readonly string[]): boolean {
  return hasFlag(args, '--help', '-h');
}

/** True when one of these flags appears before any `--` (read before parsing, to decide how errors are reported). */
export function hasFlag(args: readonly string[], ...flags: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (flags.includes(a)) return true;
  }
  return false;
}

/** node:util's messages, reworded to name the option the way the help does. */
function usageMessage(e: NodeJS.ErrnoException): string {
  const name = /--([\w-]+)/.exec(e.message)?.[1];
  const quoted = /'([^']+)'/.exec(e.message)?.[1];
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${quoted ?? e.message}`;
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && name) {
    if (/does not take an argument/.test(e.message)) return `option --${name} takes no value`;
    return `option --${name} needs a value`;
  }
  return e.message.split('\n')[0]!;
}

/**
 * Parses argv strictly against the command's table: `--flag value`, `--flag=value`, `-f value`,
 * booleans, repeatable options, positionals; everything after `--` is positional. Unknown options,
 * missing values and wrong positional counts are usage errors (exit 2) naming the option.
 */
export function parseArgs(
  args: readonly string[],
  command: Pick<Command, 'name' | 'options' | 'positionals' | 'json'>,
): ParsedArgs {
  const prog = command.name.startsWith('lhc') ? command.name : `lhc ${command.name}`;
  const usage = (msg: string) => new ConfigError(`${prog}: ${msg} (see: ${prog} --help)`);
  const options = Object.fromEntries(
    // node:util rejects keys that are present but undefined, and knows nothing of `complete`.
    Object.entries(allOptions(command)).map(([name, o]) => [
      name,
      {
        type: o.type,
        ...(o.short ? { short: o.short } : {}),
        ...(o.multiple ? { multiple: true } : {}),
      },
    ]),
  );
  let parsed;
  try {
    parsed = parseWithNode({ args: [...args], options, strict: true, allowPositionals: true });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code?.startsWith('ERR_PARSE_ARGS')) throw usage(usageMessage(err));
    throw e;
  }
  const positionals = parsed.positionals;
  const p = command.positionals ?? { min: 0, max: 0 };
  if (positionals.length < p.min) throw usage(`missing ${p.names ?? 'argument'}`);
  if (p.max !== undefined && positionals.length > p.max) {
    throw usage(`unexpected argument "${positionals[p.max]}"`);
  }
  return { options: parsed.values as ParsedArgs['options'], positionals };
}

/** The config file to use: the one given, else ./lhc.yml when it exists. */
export function configOrDefault(
  given: string | undefined,
  command: string,
  cwd = process.cwd(),
): string {
  if (given !== undefined) return given;
  const fallback = path.join(cwd, 'lhc.yml');
  if (existsSync(fallback)) return path.relative(process.cwd(), fallback);
  throw new ConfigError(
    `lhc ${command}: no CONFIG given and no lhc.yml in ${cwd} (see: lhc ${command} --help)`,
  );
}
