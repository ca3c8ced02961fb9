// The calls being served, so shutdown can wait for exactly those; and the gate that, once
// shutdown begins, refuses new calls with UNAVAILABLE (a status clients retry elsewhere)
// while the connection stays open for the calls still running.
import { PlughostError } from '../errors.js';

export class Inflight {
  private count = 0;
  private waiters: (() => void)[] = [];
  private draining = false;

  /** Throws UNAVAILABLE once shutdown has begun. */
  admit(): void {
    if (this.draining) throw new PlughostError('UNAVAILABLE', 'the server is shutting down: send this call to another replica or retry later');
  }

  /** From now on `admit` refuses. */
  drain(): void {
    this.draining = true;
  }

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
