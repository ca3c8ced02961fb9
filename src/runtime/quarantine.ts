// A module whose call ran past its time limit is quarantined for a while: its calls then
// run on fewer workers than there are (workers - 1, at least one) and the rest wait here,
// in order, so a module that spins cannot occupy every worker and stall every other
// module's calls behind it. Outside quarantine a call passes with no bookkeeping.
import { PlughostError } from '../errors.js';

interface Waiter {
  enter(): void;
  timer: NodeJS.Timeout;
}

export class Quarantine {
  private until = 0;
  private inside = 0;
  private readonly waiters: Waiter[] = [];

  constructor(
    /** Calls of the module that may run at once while it is quarantined. */
    readonly places: number,
    /** How long a timeout quarantines the module (0: never). */
    private readonly durationMs: number,
  ) {}

  get active(): boolean {
    return Date.now() < this.until;
  }

  /** A call of the module ran past its time limit. */
  timedOut(): void {
    if (this.durationMs > 0) this.until = Date.now() + this.durationMs;
  }

  /**
   * Lets a call in: undefined at once when the module is not quarantined, else a place
   * (resolves to its release), waited for up to `waitMs`.
   */
  enter(waitMs: number, label: string): Promise<() => void> | undefined {
    if (this.inside === 0 && !this.active) return undefined;
    if (this.inside < this.places && this.waiters.length === 0) return Promise.resolve(this.take());
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        enter: () => {
          clearTimeout(waiter.timer);
          resolve(this.take());
        },
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(new PlughostError('POOL_EXHAUSTED', `${label} is quarantined after a call ran past its time limit: at most ${this.places} of its calls run at once, and no place came free within ${waitMs} ms`));
        }, Math.max(0, waitMs)),
      };
      this.waiters.push(waiter);
    });
  }

  private take(): () => void {
    this.inside++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.inside--;
      this.waiters.shift()?.enter();
    };
  }
}
