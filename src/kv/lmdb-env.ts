// The LMDB environment of the embedded store, as every thread opens it: the main thread
// writes (grouped durable commits), each runtime worker reads the same environment
// directly (lmdb-js shares one environment among the threads of a process). Workers
// load it.
import { open, type Database } from 'lmdb';
import type { ScopeKeys } from './keys.js';
import type { KvReader } from './txn.js';

export interface LmdbEnvOptions {
  /** Directory of the environment. */
  path: string;
  commitMode?: 'grouped' | 'per-call' | undefined;
}

export function openLmdbEnv(options: LmdbEnvOptions) {
  // per-call: no overlapping sync, so each transactionSync pays its own fsync, as a naive store would
  const root = open({ path: options.path, noSync: false, overlappingSync: options.commitMode !== 'per-call' });
  const db: Database<Buffer, Buffer> = root.openDB({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
  /** Entries per scope, by ScopeKeys.below; absent until a write needed the count. */
  const counts: Database<number, Buffer> = root.openDB({ name: 'counts', keyEncoding: 'binary' });
  return { root, db, counts };
}

export type LmdbEnv = ReturnType<typeof openLmdbEnv>;

/** Committed data of the store, read synchronously (a KvTxn's reader). */
export class LmdbReader implements KvReader {
  constructor(readonly env: LmdbEnv) {}

  /**
   * A new read snapshot: lmdb-js renews its read transaction on a timer, which never
   * fires in a worker busy with calls, so each call asks for the latest commit itself.
   */
  refresh(): void {
    this.env.root.resetReadTxn();
  }

  get(key: Buffer): Buffer | undefined {
    return this.env.db.get(key) ?? undefined;
  }

  *range(lo: Buffer, hi: Buffer, reverse: boolean): Generator<[Buffer, Uint8Array]> {
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

  count(scope: ScopeKeys): number {
    return this.env.counts.get(scope.below) ?? this.env.db.getKeysCount({ start: scope.prefix, end: scope.above });
  }
}
