// One writer at a time per scope, so read-modify-write across parallel calls loses no
// update. The main thread grants a scope's lock before it hands a writing call to a
// worker, in the order calls asked for it, so no worker is ever parked on a scope. The
// holder keeps it only until its reply is in: its writes are then committed in the
// background, and the next holder reads them from the store's overlay of pending commits.
import { KvOpError } from './kv-error.js';

interface Waiter {
  grant(): void;
  timer: NodeJS.Timeout;
}

export class ScopeLocks {
  /** Held locks by scope id, each with its waiters in the order they came. */
  private readonly held = new Map<string, Waiter[]>();

  /** Takes the lock of scope `id`, waiting up to `timeoutMs`; resolves to its release (safe to call twice). */
  acquire(id: string, timeoutMs: number): Promise<() => void> {
    const queue = this.held.get(id);
    if (!queue) {
      this.held.set(id, []);
      return Promise.resolve(this.releaser(id));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(waiter.timer);
          resolve(this.releaser(id));
        },
        timer: setTimeout(() => {
          queue.splice(queue.indexOf(waiter), 1);
          reject(new KvOpError(`the KV scope is busy: other calls held its write lock for over ${timeoutMs} ms`));
        }, Math.max(0, timeoutMs)),
      };
      queue.push(waiter);
    });
  }

  /** Whether scope `id` is locked now. */
  isHeld(id: string): boolean {
    return this.held.has(id);
  }

  private releaser(id: string): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const queue = this.held.get(id)!;
      const next = queue.shift();
      if (next) next.grant();
      else this.held.delete(id);
    };
  }
}
