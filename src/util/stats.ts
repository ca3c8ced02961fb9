// Order statistics for latency reports (the CLI's bench and the benchmarks).
export const median = (xs: number[]): number => percentile(xs, 50);

export const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
