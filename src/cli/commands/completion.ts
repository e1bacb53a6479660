import { ConfigError } from '../../core/errors.js';
import { bashCompletion, zshCompletion } from '../completion.js';
import type { Command } from '../command.js';

export const completionCommand: Command = {
  name: 'completion',
  summary: 'print a bash or zsh completion script',
  help: `Usage: lhc completion bash|zsh

Prints a completion script for the shell, generated from lhc's own command table (commands,
options, and the values some options take). Load it in the current shell, or add the line to
~/.bashrc or ~/.zshrc:
  source <(lhc completion bash)
  source <(lhc completion zsh)     (after compinit)`,
  positionals: { min: 1, max: 1, names: 'SHELL (bash or zsh)', complete: ['bash', 'zsh'] },
  async run({ positionals }, ctx) {
    const shell = positionals[0];
    if (shell === 'bash') ctx.out(bashCompletion(ctx.commands).trimEnd());
    else if (shell === 'zsh') ctx.out(zshCompletion(ctx.commands).trimEnd());
    else
      throw new ConfigError(
        `lhc completion: unknown shell "${shell}", expected bash or zsh (see: lhc completion --help)`,
      );
    return 0;
  },
};
