// @ts-check
// One writer at a time per scope, so read-modify-write across parallel calls loses no
// update. The locks live in shared memory: a worker takes a scope's lock itself, with one
// compare-and-swap, at the moment a writing call starts (never while it waits in a queue);
// if another call holds it, the worker hands the call back unstarted instead of waiting,
// so no worker is ever parked on a scope. Only the main thread releases a lock (once the
// holder's commit is visible, or the call failed) and so it alone wakes the waiters.
// Scopes hash to one of SLOTS slots: two scopes sharing a slot just take turns.
// Plain JavaScript: workers load it.
import { KvOpError } from './kv-error.js';

export const SLOTS = 4096;

/** FNV-1a of a scope's id, as a slot. @param {string} id */
export function slotOf(id) {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return (h >>> 0) % SLOTS;
}

/** The worker's side: try to take a slot for `token` (non-zero). @param {Int32Array} table @param {number} slot @param {number} token */
export function tryLock(table, slot, token) {
  return Atomics.compareExchange(table, slot, 0, token) === 0;
}

export class ScopeLocks {
  constructor() {
    this.sab = new SharedArrayBuffer(4 * SLOTS);
    this.table = new Int32Array(this.sab);
    /** Main-thread waiters by slot, woken when the slot is released. @type {Map<number, Set<() => void>>} */
    this.waiters = new Map();
    this.nextToken = 1;
  }

  /** A token no other holder has now. */
  token() {
    const t = this.nextToken;
    this.nextToken = this.nextToken >= 0x7fffffff ? 1 : this.nextToken + 1;
    return t;
  }

  /** Releases `slot` if `token` holds it; wakes its waiters. @param {number} slot @param {number} token */
  release(slot, token) {
    if (Atomics.compareExchange(this.table, slot, token, 0) !== token) return;
    const w = this.waiters.get(slot);
    if (!w) return;
    this.waiters.delete(slot);
    for (const wake of w) wake();
  }

  /**
   * Resolves when `slot` is released (or at once if it is free), false after `timeoutMs`.
   * @param {number} slot
   * @param {number} timeoutMs
   * @returns {Promise<boolean>}
   */
  whenFree(slot, timeoutMs) {
    if (Atomics.load(this.table, slot) === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      let set = this.waiters.get(slot);
      if (!set) this.waiters.set(slot, (set = new Set()));
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        set.delete(wake);
        resolve(false);
      }, Math.max(0, timeoutMs));
      set.add(wake);
    });
  }

  /**
   * Takes the lock of `id` on the main thread, waiting up to `timeoutMs`; resolves to the release.
   * @param {string} id
   * @param {number} timeoutMs
   * @returns {Promise<() => void>}
   */
  async acquire(id, timeoutMs) {
    const slot = slotOf(id);
    const token = this.token();
    const until = Date.now() + timeoutMs;
    while (!tryLock(this.table, slot, token)) {
      if (!(await this.whenFree(slot, until - Date.now()))) {
        throw new KvOpError(`the KV scope is busy: another call held its write lock for over ${timeoutMs} ms`);
      }
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(slot, token);
    };
  }
}
