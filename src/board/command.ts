/** `lhc verify --board`: what the CLI's verify command calls for a board run. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../config/load.js';
import { ConfigError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { formatBoardReport, verifyOnBoard } from './verify-board.js';

export const BOARD_HELP = `  --board              verify on a simulated board instead: boot a Debian systemd machine in
                       systemd-nspawn, run the build output's deploy/install.sh install there and
                       probe the board's own port (needs the output of lhc build)
  --out DIR            with --board: the build output (default: outputs.dir from the config)`;

export async function runBoardVerify(
  configFile: string,
  out: string | undefined,
  ctx: { logger: Logger; out(line: string): void },
): Promise<number> {
  const config = await loadConfig(configFile);
  const outDir = path.resolve(out ?? config.outputs.dir);
  if (!existsSync(path.join(outDir, 'deploy/install.sh')))
    throw new ConfigError(
      `lhc verify --board: ${outDir} holds no deploy/install.sh; run lhc build first (or pass --out DIR)`,
    );
  const controller = new AbortController();
  const onSignal = (s: NodeJS.Signals) => {
    ctx.logger.warn(`${s} received: powering the board off`);
    controller.abort(new Error(`interrupted by ${s}`));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  try {
    const report = await verifyOnBoard({
      config,
      outDir,
      logger: ctx.logger,
      signal: controller.signal,
    });
    for (const line of formatBoardReport(report)) ctx.out(line);
    return report.ok ? 0 : 1;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
