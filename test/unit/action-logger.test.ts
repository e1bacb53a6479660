import { describe, expect, it } from 'vitest';
import { actionsLogger, type CoreLike } from '../../src/action/logger.js';

function recorder(): CoreLike & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    info: (m) => void calls.push(`info ${m}`),
    warning: (m) => void calls.push(`warning ${m}`),
    debug: (m) => void calls.push(`debug ${m}`),
    startGroup: (n) => void calls.push(`group ${n}`),
    endGroup: () => void calls.push('endgroup'),
  };
}

describe('actionsLogger', () => {
  it('maps levels onto @actions/core', () => {
    const core = recorder();
    const log = actionsLogger(core);
    log.info('a');
    log.warn('b');
    log.debug('c');
    expect(core.calls).toEqual(['info a', 'warning b', 'debug c']);
  });

  it('puts a stage in one log group that ends with its timing, and records it', async () => {
    const core = recorder();
    const log = actionsLogger(core);
    const value = await log.group('lua', async () => {
      log.info('building');
      await new Promise((r) => setTimeout(r, 250));
      return 42;
    });
    expect(value).toBe(42);
    expect(core.calls.slice(0, 2)).toEqual(['group lua', 'info building']);
    expect(core.calls[2]).toMatch(/^info lua: done in \d+\.\d s$/);
    expect(core.calls[3]).toBe('endgroup');
    expect(core.calls[4]).toMatch(/^info ✓ lua: done in \d+\.\d s$/);
    expect(log.timings).toHaveLength(1);
    expect(log.timings[0]!.stage).toBe('lua');
    expect(log.timings[0]!.seconds).toBeGreaterThanOrEqual(0.2);
  });

  it('never nests runner groups and closes the group when the stage throws', async () => {
    const core = recorder();
    const log = actionsLogger(core);
    await expect(
      log.group('root', async () => {
        await log.group('packages', async () => {});
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(core.calls.filter((c) => c.startsWith('group '))).toEqual(['group root']);
    expect(core.calls.filter((c) => c === 'endgroup')).toHaveLength(1);
    expect(core.calls).toContain('info ▶ packages');
    expect(core.calls.some((c) => /^info ✗ root: failed after \d+\.\d s$/.test(c))).toBe(true);
    // A later stage opens a real group again.
    await log.group('pack', async () => {});
    expect(core.calls.filter((c) => c.startsWith('group '))).toEqual(['group root', 'group pack']);
  });
});
