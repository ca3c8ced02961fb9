// One writer at a time per scope: a transaction that may write takes its scope's lock at
// its first operation, so read-modify-write across parallel calls loses no update. Held
// only until the commit's writes are in the store's overlay, not until they are on disk.
import { KvOpError } from './types.js';

interface Waiter {
  grant(): void;
}

export class ScopeLocks {
  private readonly held = new Map<string, Waiter[]>();

  /** Resolves to the release function, or rejects after `timeoutMs`. */
  acquire(id: string, timeoutMs: number): Promise<() => void> {
    const queue = this.held.get(id);
    if (!queue) {
      this.held.set(id, []);
      return Promise.resolve(this.releaser(id));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve(this.releaser(id));
        },
      };
      const timer = setTimeout(() => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        reject(new KvOpError(`the KV scope is busy: another call held its write lock for over ${timeoutMs} ms`));
      }, timeoutMs);
      queue.push(waiter);
    });
  }

  private releaser(id: string): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const queue = this.held.get(id)!;
      const next = queue.shift();
      if (next) next.grant();
      else this.held.delete(id);
    };
  }
}
