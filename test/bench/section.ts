/** What a benchmark section is: a name and a function returning measurements. */
export interface Measurement {
  /** What was measured, e.g. "cross cold build". */
  metric: string;
  value: number;
  /** "s", "bytes", "count", ... */
  unit: string;
}

export interface BenchContext {
  /** A fresh directory for this section, removed afterwards. */
  workDir: string;
  /** Progress lines (stderr), so stdout keeps only results. */
  log(line: string): void;
}

export interface BenchSection {
  name: string;
  run(ctx: BenchContext): Promise<Measurement[]>;
}

/** Seconds fn takes, with its result. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; result: T }> {
  const t = process.hrtime.bigint();
  const result = await fn();
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, result };
}
