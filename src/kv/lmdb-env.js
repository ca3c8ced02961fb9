// @ts-check
// The LMDB environment of the embedded store, as every thread opens it: the main thread
// writes (grouped durable commits), each runtime worker reads the same environment
// directly (lmdb-js shares one environment among the threads of a process). Plain
// JavaScript: workers load it.
import { open } from 'lmdb';

/**
 * @typedef {object} LmdbEnvOptions
 * @property {string} path directory of the environment
 * @property {'grouped' | 'per-call'} [commitMode]
 */

/** @param {LmdbEnvOptions} options */
export function openLmdbEnv(options) {
  // per-call: no overlapping sync, so each transactionSync pays its own fsync, as a naive store would
  const root = open({ path: options.path, noSync: false, overlappingSync: options.commitMode !== 'per-call' });
  /** @type {import('lmdb').Database<Buffer, Buffer>} */
  const db = root.openDB({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
  /** Entries per scope, by ScopeKeys.below; absent until a write needed the count. @type {import('lmdb').Database<number, Buffer>} */
  const counts = root.openDB({ name: 'counts', keyEncoding: 'binary' });
  return { root, db, counts };
}

/** @typedef {ReturnType<typeof openLmdbEnv>} LmdbEnv */

/** Committed data of the store, read synchronously (a KvTxn's reader). */
export class LmdbReader {
  /** @param {LmdbEnv} env */
  constructor(env) {
    this.env = env;
  }

  /**
   * A new read snapshot: lmdb-js renews its read transaction on a timer, which never
   * fires in a worker busy with calls, so each call asks for the latest commit itself.
   */
  refresh() {
    this.env.root.resetReadTxn();
  }

  /** @param {Buffer} key */
  get(key) {
    return this.env.db.get(key) ?? undefined;
  }

  /**
   * @param {Buffer} lo
   * @param {Buffer} hi
   * @param {boolean} reverse
   * @returns {Generator<[Buffer, Uint8Array]>}
   */
  *range(lo, hi, reverse) {
    if (Buffer.compare(lo, hi) >= 0) return;
    if (!reverse) {
      for (const { key, value } of this.env.db.getRange({ start: lo, end: hi })) yield [key, value];
      return;
    }
    // a reverse range is [start, end) downwards: start at hi, skip hi itself, and lo (the end) comes last
    for (const { key, value } of this.env.db.getRange({ start: hi, end: lo, reverse: true })) {
      if (Buffer.compare(key, hi) < 0) yield [key, value];
    }
    const first = this.env.db.get(lo);
    if (first !== undefined) yield [lo, first];
  }

  /** @param {import('./keys.js').ScopeKeys} scope */
  count(scope) {
    return this.env.counts.get(scope.below) ?? this.env.db.getKeysCount({ start: scope.prefix, end: scope.above });
  }
}
