/** Bounded concurrency for independent jobs whose results must come back in input order. */
import os from 'node:os';

/** Probes in flight at once: one per core (each costs a container start under QEMU). */
export function probeParallelism(): number {
  return Math.max(1, os.availableParallelism());
}

/**
 * Runs `fn` over `items` with at most `limit` calls in flight; the results are in input order.
 * After a failure no new call starts; once the running ones settle, the failure of the earliest
 * item is thrown, which is the one a sequential run would have reported. `worker` (0 to
 * min(limit, items) - 1) names the one of the concurrent loops that runs the call: calls with the
 * same worker never overlap, so each can own a resource (a container) for all its calls.
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number, worker: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  const failures = new Map<number, unknown>();
  let next = 0;
  const worker = async (_: unknown, w: number) => {
    while (next < items.length && failures.size === 0) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, i, w);
      } catch (e) {
        failures.set(i, e);
      }
    }
  };
  const workers = Math.max(1, Math.min(limit, items.length));
  await Promise.all(Array.from({ length: workers }, worker));
  if (failures.size > 0) throw failures.get(Math.min(...failures.keys()));
  return results;
}
