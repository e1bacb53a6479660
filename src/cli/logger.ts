/**
 * The CLI's logger: everything on stderr, so stdout carries only results (and --json only its
 * object). --quiet keeps warnings and errors; --verbose (or LHC_DEBUG, its older spelling) adds
 * debug lines.
 */
import type { Logger } from '../core/logger.js';
import { painter } from './colour.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';

export function verbosity(
  flags: { verbose?: boolean; quiet?: boolean },
  env: NodeJS.ProcessEnv,
): Verbosity {
  if (flags.quiet) return 'quiet';
  if (flags.verbose || env.LHC_DEBUG) return 'verbose';
  return 'normal';
}

export function cliLogger(opts: {
  level: Verbosity;
  colour: boolean;
  write: (text: string) => void;
}): Logger {
  const paint = painter(opts.colour);
  const { level, write } = opts;
  return {
    info: (m) => {
      if (level !== 'quiet') write(`${m}\n`);
    },
    warn: (m) => write(`${paint('yellow', 'warning:')} ${m}\n`),
    debug: (m) => {
      if (level === 'verbose') write(`${paint('dim', `debug: ${m}`)}\n`);
    },
    async group(name, fn) {
      const start = Date.now();
      if (level !== 'quiet') write(`${paint('bold', `==> ${name}`)}\n`);
      try {
        return await fn();
      } finally {
        if (level !== 'quiet') {
          write(`${paint('dim', `<== ${name} (${((Date.now() - start) / 1000).toFixed(1)} s)`)}\n`);
        }
      }
    },
  };
}
