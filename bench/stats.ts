// Small statistics shared by the benchmarks.
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

export const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};

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
