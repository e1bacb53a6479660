/** Every `lhc` subcommand, in the order `lhc --help` lists them. Add one line per command. */
import type { Command } from '../command.js';
import { buildCommand } from './build.js';
import { completionCommand } from './completion.js';
import { diffCommand } from './diff.js';
import { doctorCommand } from './doctor.js';
import { fetchCommand } from './fetch.js';
import { luaCommand } from './lua.js';
import { setupCommand } from './setup.js';
import { storeCommand } from './store.js';
import { validateCommand } from './validate.js';
import { verifyCommand } from './verify.js';

export const commands: Command[] = [
  buildCommand,
  validateCommand,
  verifyCommand,
  fetchCommand,
  luaCommand,
  storeCommand,
  diffCommand,
  doctorCommand,
  setupCommand,
  completionCommand,
];
