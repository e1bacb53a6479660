import { describe, expect, it } from 'vitest';
import { mapBounded } from '../../src/core/parallel.js';
import { sleep } from '../../src/core/wait.js';

describe('mapBounded', () => {
  it('keeps input order whatever order the calls finish in, and never exceeds the bound', async () => {
    let inFlight = 0;
    let most = 0;
    const delays = [40, 5, 25, 0, 15, 30, 10];
    const out = await mapBounded(delays, 3, async (ms, i) => {
      most = Math.max(most, ++inFlight);
      await sleep(ms);
      inFlight--;
      return `${i}:${ms}`;
    });
    expect(out).toEqual(delays.map((ms, i) => `${i}:${ms}`));
    expect(most).toBe(3);
  });

  it('with a bound of 1 runs one call after another', async () => {
    const order: string[] = [];
    await mapBounded(['a', 'b', 'c'], 1, async (x) => {
      order.push(`start ${x}`);
      await sleep(1);
      order.push(`end ${x}`);
    });
    expect(order).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  it('reports the earliest failing item, as a sequential run would, after the running calls settle', async () => {
    const settled: number[] = [];
    const run = mapBounded([0, 1, 2, 3, 4, 5], 3, async (i) => {
      await sleep(i === 1 ? 30 : 5);
      settled.push(i);
      if (i === 1 || i === 2) throw new Error(`item ${i}`);
      return i;
    });
    await expect(run).rejects.toThrow('item 1');
    // Item 2 failed first; nothing new started after that, and item 1 was waited for.
    expect(settled).toContain(1);
    expect(settled).not.toContain(5);
  });
});
