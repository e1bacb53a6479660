/**
 * The contract every `lhc` subcommand implements, and the one argv parser they share, so flags,
 * `--help` and usage errors behave the same in every command.
 */
import { ConfigError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

export interface CommandContext {
  /** Progress and diagnostics (stderr on a terminal). */
  logger: Logger;
  /** The command's result for the user or a script (stdout); one call per line. */
  out(line: string): void;
  /** Aborted on SIGINT/SIGTERM (see tools/signals.ts); pass it to every stage. */
  signal?: AbortSignal;
}

export interface Command {
  name: string;
  /** One line for the command list in `lhc --help`. */
  summary: string;
  /** Full text for `lhc <name> --help`, starting with the usage line. */
  help: string;
  /** Returns the exit code: 0 ok, 1 failure, 2 usage or config error. */
  run(args: string[], ctx: CommandContext): Promise<number>;
}

export interface FlagSpec {
  type: 'string' | 'boolean';
  /** One-letter alias, e.g. `o` for `-o DIR`. */
  short?: string;
}

export interface ArgSpec {
  flags?: Record<string, FlagSpec>;
  /** Positional arguments: minimum and maximum count (max undefined = unlimited). */
  positionals?: { min: number; max?: number; names?: string };
}

export interface ParsedArgs {
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** True when the user asked for help before any `--`. */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/**
 * Parses `--flag value`, `--flag=value`, `-f value`, boolean `--flag` / `--no-flag`, and positionals;
 * everything after `--` is positional. Unknown flags and missing values are usage errors (exit 2).
 */
export function parseArgs(args: readonly string[], spec: ArgSpec, command = 'lhc'): ParsedArgs {
  const flagSpecs = spec.flags ?? {};
  const byShort = new Map<string, string>();
  for (const [name, f] of Object.entries(flagSpecs)) if (f.short) byShort.set(f.short, name);
  const flags: ParsedArgs['flags'] = {};
  const positionals: string[] = [];
  const usage = (msg: string) => new ConfigError(`${command}: ${msg} (see: ${command} --help)`);

  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq === -1 ? a.slice(2) : a.slice(2, eq);
      inline = eq === -1 ? undefined : a.slice(eq + 1);
    } else {
      const long = byShort.get(a.slice(1));
      if (!long) throw usage(`unknown option ${a}`);
      name = long;
    }
    const f = flagSpecs[name];
    if (
      !f &&
      name.startsWith('no-') &&
      flagSpecs[name.slice(3)]?.type === 'boolean' &&
      inline === undefined
    ) {
      flags[name.slice(3)] = false;
      continue;
    }
    if (!f) throw usage(`unknown option --${name}`);
    if (f.type === 'boolean') {
      if (inline === undefined) flags[name] = true;
      else if (inline === 'true') flags[name] = true;
      else if (inline === 'false') flags[name] = false;
      else throw usage(`option --${name} takes no value or true/false, got "${inline}"`);
      continue;
    }
    if (inline !== undefined) {
      flags[name] = inline;
    } else {
      const next = args[i + 1];
      if (next === undefined || (next.startsWith('-') && next !== '-'))
        throw usage(`option --${name} needs a value`);
      flags[name] = next;
      i++;
    }
  }

  const p = spec.positionals ?? { min: 0, max: 0 };
  const what = p.names ?? 'argument';
  if (positionals.length < p.min) throw usage(`missing ${what}`);
  if (p.max !== undefined && positionals.length > p.max) {
    throw usage(`unexpected argument "${positionals[p.max]}"`);
  }
  return { flags, positionals };
}
