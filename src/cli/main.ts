/**
 * The CLI shell: argv in, exit code out. It parses argv against the command's table, sets up
 * the logger (verbosity, colour) and decides how loud an error is; the work is in the commands
 * and the stages they drive.
 */
import type { Logger } from '../core/logger.js';
import { LHC_VERSION } from '../core/version.js';
import { colourWanted, painter } from './colour.js';
import { hasFlag, parseArgs, wantsHelp, type Command, type CommandContext } from './command.js';
import { commands as registered } from './commands/index.js';
import { errorJson, reportError } from './errors.js';
import { cliLogger, verbosity } from './logger.js';

export interface MainIo {
  logger?: Logger;
  /** stdout for command results. */
  out?: (line: string) => void;
  /** stderr for logs and errors. */
  err?: (line: string) => void;
  commands?: readonly Command[];
  env?: NodeJS.ProcessEnv;
  /** Whether stdout / stderr are terminals (colour); default: ask the process streams. */
  stdoutTTY?: boolean;
  stderrTTY?: boolean;
  /** The shell's cancellation signal (tools/signals.ts), handed to the command. */
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
    'Options for every command:',
    "  -h, --help      the command's help",
    '  -v, --verbose   debug lines too (LHC_DEBUG=1 does the same)',
    '  -q, --quiet     warnings and errors only',
    `  --json          (${commands
      .filter((c) => c.json)
      .map((c) => c.name)
      .join(', ')}) one JSON object on stdout, logs on stderr`,
    '',
    'Run "lhc <command> --help" for a command\'s options.',
    'Exit codes: 0 ok, 1 failure, 2 usage or config error.',
  ].join('\n');
}

export async function main(argv: readonly string[], io: MainIo = {}): Promise<number> {
  const out = io.out ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const err = io.err ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const env = io.env ?? process.env;
  const commands = io.commands ?? registered;
  const [name, ...rest] = argv;

  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? commands.find((c) => c.name === rest[0]) : undefined;
    out(topic ? topic.help : topLevelHelp(commands));
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    out(LHC_VERSION);
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
  // Read before parsing, so that even a usage error answers in the form the caller asked for.
  const json = command.json === true && hasFlag(rest, '--json');
  const errColour = colourWanted({ isTTY: io.stderrTTY ?? process.stderr.isTTY }, env);
  const paintErr = painter(errColour);
  try {
    const args = parseArgs(rest, command);
    const logger =
      io.logger ??
      cliLogger({
        level: verbosity(args.options as { verbose?: boolean; quiet?: boolean }, env),
        colour: errColour,
        write: (text) => err(text.replace(/\n$/, '')),
      });
    const ctx: CommandContext = {
      logger,
      out,
      json,
      emitJson: (value) => out(JSON.stringify(value, null, 2)),
      colour: !json && colourWanted({ isTTY: io.stdoutTTY ?? process.stdout.isTTY }, env),
      commands,
      ...(io.signal ? { signal: io.signal } : {}),
    };
    return await command.run(args, ctx);
  } catch (e) {
    const r = reportError(e);
    err(r.message.replace(/^error:/, paintErr('red', 'error:')));
    if (json) out(JSON.stringify({ ok: false, error: errorJson(e) }, null, 2));
    return r.exitCode;
  }
}
