/** N requests at concurrency C, each answer checked, latencies summarised as percentiles. */

/** Nearest-rank percentile of ascending `sorted` (p in 0..100); 0 for an empty list. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export interface LoadResult {
  requests: number;
  concurrency: number;
  failures: number;
  /** Milliseconds per request, ascending. */
  latencies: number[];
  p50ms: number;
  p95ms: number;
  p99ms: number;
  /** The first failure, for the report (a diff or an error message). */
  firstFailure?: string;
  wallMs: number;
}

/**
 * Runs `requests` calls of `one(i)` with at most `concurrency` in flight. `one` resolves to
 * undefined when the answer was right, or to a description of what was wrong; a rejection
 * counts as a failure too.
 */
export async function runLoad(
  requests: number,
  concurrency: number,
  one: (i: number) => Promise<string | undefined>,
  signal?: AbortSignal,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let failures = 0;
  let firstFailure: string | undefined;
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < requests) {
      signal?.throwIfAborted();
      const i = next++;
      const start = performance.now();
      let problem: string | undefined;
      try {
        problem = await one(i);
      } catch (e) {
        signal?.throwIfAborted();
        problem = (e as Error).message;
      }
      latencies.push(performance.now() - start);
      if (problem !== undefined) {
        failures++;
        firstFailure ??= `request ${i + 1}: ${problem}`;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, requests)) }, worker));
  latencies.sort((a, b) => a - b);
  const round = (n: number) => Math.round(n * 10) / 10;
  return {
    requests,
    concurrency,
    failures,
    latencies,
    p50ms: round(percentile(latencies, 50)),
    p95ms: round(percentile(latencies, 95)),
    p99ms: round(percentile(latencies, 99)),
    firstFailure,
    wallMs: performance.now() - t0,
  };
}
