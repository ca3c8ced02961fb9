// Counts the unary calls being served, so shutdown can wait for exactly those.
export class Inflight {
  private count = 0;
  private waiters: (() => void)[] = [];

  track<T>(p: Promise<T>): Promise<T> {
    this.count++;
    const done = () => {
      if (--this.count === 0) for (const w of this.waiters.splice(0)) w();
    };
    p.then(done, done);
    return p;
  }

  /** Resolves when no call is in flight. */
  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }
}
