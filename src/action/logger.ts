/**
 * The Logger the action hands to stages: lines go through @actions/core so warnings become
 * annotations, and each stage gets a collapsible log group that ends with its duration.
 */
import * as core from '@actions/core';
import type { Logger } from '../core/logger.js';

export interface ActionsLogger extends Logger {
  /** Seconds per finished top-level group, in the order they finished. */
  readonly timings: { stage: string; seconds: number }[];
}

/** The subset of @actions/core used here, so tests can capture the calls. */
export interface CoreLike {
  info(message: string): void;
  warning(message: string): void;
  debug(message: string): void;
  startGroup(name: string): void;
  endGroup(): void;
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}

/** Stage output as workflow commands: warnings become annotations, groups become log groups. */
export function actionsLogger(out: CoreLike = core): ActionsLogger {
  const timings: { stage: string; seconds: number }[] = [];
  // The runner's log viewer cannot nest groups: a startGroup inside a group silently closes the
  // outer one. Inner groups therefore become plain marker lines inside the open group.
  let depth = 0;
  return {
    timings,
    info: (m) => out.info(m),
    warn: (m) => out.warning(m),
    debug: (m) => out.debug(m),
    async group(name, fn) {
      const start = Date.now();
      const outer = depth === 0;
      if (outer) out.startGroup(name);
      else out.info(`▶ ${name}`);
      depth++;
      let failed = true;
      try {
        const value = await fn();
        failed = false;
        return value;
      } finally {
        depth--;
        const s = seconds(Date.now() - start);
        const line = `${name}: ${failed ? 'failed after' : 'done in'} ${s.toFixed(1)} s`;
        out.info(line);
        if (outer) {
          out.endGroup();
          timings.push({ stage: name, seconds: s });
          // Repeated outside the group so the timing stays visible while the group is collapsed.
          out.info(`${failed ? '✗' : '✓'} ${line}`);
        }
      }
    },
  };
}
