// Small statistics shared by the benchmarks.
export { median, percentile } from '../src/util/stats.js';

/** Mean µs per call of `n` sequential calls. */
export async function perCallUs(n: number, run: () => Promise<unknown> | unknown): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < n; i++) await run();
  return ((performance.now() - t) * 1000) / n;
}

/** Mean µs per call of `n` calls kept `depth` in flight. */
export async function pipelinedUs(n: number, depth: number, run: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  let started = 0;
  await Promise.all(Array.from({ length: depth }, async () => {
    while (started++ < n) await run();
  }));
  return ((performance.now() - t) * 1000) / n;
}
