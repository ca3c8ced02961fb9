// Guest `log` lines, rate-limited per module: a token bucket of lines and one of bytes,
// each refilled at its rate per second and holding at most one second's worth. A guest can
// call `log` in a loop (one call was measured writing ~40 MB), and its lines would crowd out
// every other line of the service's log; what is over the rate is counted and dropped.

interface Bucket {
  lines: number;
  bytes: number;
  at: number;
}

/** Most modules with a bucket of their own; past it the buckets start over (they refill in a second anyway). */
const MAX_BUCKETS = 10_000;

export class LogLimiter {
  private readonly buckets = new Map<string, Bucket>();
  /** Lines dropped, by module. */
  readonly dropped = new Map<string, number>();

  constructor(
    private readonly linesPerSecond: number,
    private readonly bytesPerSecond: number,
  ) {}

  /** Whether `module` may log a line of `bytes` now; counts it as dropped if not. */
  admit(module: string, bytes: number, now = performance.now()): boolean {
    let b = this.buckets.get(module);
    if (!b) {
      if (this.buckets.size >= MAX_BUCKETS) this.buckets.clear();
      b = { lines: this.linesPerSecond, bytes: this.bytesPerSecond, at: now };
      this.buckets.set(module, b);
    }
    const seconds = (now - b.at) / 1000;
    b.at = now;
    b.lines = Math.min(this.linesPerSecond, b.lines + seconds * this.linesPerSecond);
    b.bytes = Math.min(this.bytesPerSecond, b.bytes + seconds * this.bytesPerSecond);
    if (b.lines >= 1 && b.bytes >= bytes) {
      b.lines -= 1;
      b.bytes -= bytes;
      return true;
    }
    this.dropped.set(module, (this.dropped.get(module) ?? 0) + 1);
    return false;
  }
}
