// The embedded, durable KV store on LMDB. Reads see three layers: a transaction's own
// buffer (in transaction.ts), this store's overlay of committed writes not yet on disk,
// and LMDB. Commits from every scope that arrive in one event turn share one LMDB
// transaction and one flush; a commit resolves only once its writes are durable.
import { open, type Database, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import { ScopeLocks } from './scope-locks.js';
import { fromMapKey, mapKey, scopeKeys, type ScopeKeys } from './keys.js';
import { LmdbTransaction } from './transaction.js';
import type { KvAccess, KvLimits, KvScope, KvStore, KvTransaction } from './types.js';

export interface LmdbKvStoreOptions {
  /** Directory of the LMDB environment (created if missing). */
  path: string;
  /** `grouped` (default) shares one durable LMDB commit among concurrent calls; `per-call` commits each alone with its own fsync (for comparison). */
  commitMode?: 'grouped' | 'per-call';
  /** How long a writing call waits for its scope's lock before its KV operation fails. */
  lockTimeoutMs?: number;
}

/** A stored value, or null for a deletion. */
export type Layer = Map<string, Uint8Array | null>;

export interface Range {
  lo?: Buffer;
  hi?: Buffer;
  reverse: boolean;
}

export class LmdbKvStore implements KvStore {
  private readonly root: RootDatabase;
  private readonly db: Database<Buffer, Buffer>;
  /** Committed writes not yet in LMDB, by stored key (latin1). */
  private readonly overlay: Layer = new Map();
  private readonly counts = new Map<string, number>();
  readonly locks = new ScopeLocks();
  readonly lockTimeoutMs: number;
  private readonly commitMode: 'grouped' | 'per-call';
  private readonly writing = new Set<Promise<unknown>>();
  private closed = false;

  constructor(options: LmdbKvStoreOptions) {
    mkdirSync(options.path, { recursive: true });
    // per-call: no overlapping sync, so each transactionSync pays its own fsync, as a naive store would
    this.root = open({ path: options.path, noSync: false, overlappingSync: options.commitMode !== 'per-call' });
    this.db = this.root.openDB<Buffer, Buffer>({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
    this.commitMode = options.commitMode ?? 'grouped';
    this.lockTimeoutMs = options.lockTimeoutMs ?? 2000;
  }

  begin(scope: KvScope, access: KvAccess, limits: KvLimits): KvTransaction {
    if (this.closed) throw new Error('the KV store is closed');
    return new LmdbTransaction(this, scopeKeys(scope), access, limits);
  }

  /** The committed value of a stored key (overlay, then LMDB). */
  read(key: Buffer): Uint8Array | undefined {
    const o = this.overlay.get(mapKey(key));
    if (o !== undefined) return o ?? undefined;
    return this.db.get(key) ?? undefined;
  }

  /**
   * Committed entries of a scope in [lo, hi), in key order (or reverse), with `top` laid
   * over them (a transaction's buffer). Lazy: stop iterating to stop reading.
   */
  *scan(scope: ScopeKeys, range: Range, top: Layer): Generator<[Buffer, Uint8Array]> {
    const lo = range.lo ?? scope.prefix;
    const hi = range.hi ?? scope.above;
    const inRange = (k: Buffer) => Buffer.compare(k, lo) >= 0 && Buffer.compare(k, hi) < 0;
    const layered = new Map<string, Uint8Array | null>();
    for (const layer of [this.overlay, top]) {
      for (const [k, v] of layer) if (inRange(fromMapKey(k))) layered.set(k, v);
    }
    const over = [...layered.keys()].sort();
    if (range.reverse) over.reverse();
    const before = (a: string, b: string) => (range.reverse ? a > b : a < b);
    // LMDB's reverse range is (end, start]: start at hi, skip hi itself, stop below lo
    const base = range.reverse
      ? this.db.getRange({ start: hi, end: scope.below, reverse: true })
      : this.db.getRange({ start: lo, end: hi });
    let i = 0;
    for (const { key, value } of base) {
      if (range.reverse && (Buffer.compare(key, hi) >= 0 || Buffer.compare(key, lo) < 0)) {
        if (Buffer.compare(key, lo) < 0) break;
        continue;
      }
      const k = mapKey(key);
      while (i < over.length && before(over[i]!, k)) {
        const v = layered.get(over[i]!);
        if (v) yield [fromMapKey(over[i]!), v];
        i++;
      }
      if (i < over.length && over[i] === k) {
        const v = layered.get(over[i]!);
        if (v) yield [key, v];
        i++;
        continue;
      }
      yield [key, value];
    }
    for (; i < over.length; i++) {
      const v = layered.get(over[i]!);
      if (v) yield [fromMapKey(over[i]!), v];
    }
  }

  /** Committed entries in the scope (counted once, then kept up to date by commits). */
  entryCount(scope: ScopeKeys): number {
    let n = this.counts.get(scope.id);
    if (n === undefined) {
      n = 0;
      for (const _ of this.scan(scope, { reverse: false }, new Map())) n++;
      this.counts.set(scope.id, n);
    }
    return n;
  }

  /**
   * Makes a transaction's writes visible at once (the caller still holds the scope lock)
   * and durable soon; the returned promise resolves when they are on disk.
   */
  apply(scope: ScopeKeys, writes: Layer): Promise<void> {
    let delta = 0;
    for (const [k, v] of writes) {
      const existed = this.read(fromMapKey(k)) !== undefined;
      delta += (v ? 1 : 0) - (existed ? 1 : 0);
      this.overlay.set(k, v);
    }
    if (this.counts.has(scope.id)) this.counts.set(scope.id, this.counts.get(scope.id)! + delta);
    const write = () => {
      for (const [k, v] of writes) {
        if (v) this.db.put(fromMapKey(k), Buffer.from(v.buffer, v.byteOffset, v.byteLength));
        else this.db.remove(fromMapKey(k));
      }
    };
    const committed = this.commitMode === 'grouped' ? this.db.transaction(write) : Promise.resolve(this.db.transactionSync(write));
    const done = (async () => {
      try {
        await committed;
      } finally {
        // LMDB has them now; drop overlay entries that no later commit replaced
        for (const [k, v] of writes) if (this.overlay.get(k) === v) this.overlay.delete(k);
      }
      await this.root.flushed;
    })();
    this.writing.add(done);
    const forget = () => this.writing.delete(done);
    done.then(forget, forget);
    return done;
  }

  /** Waits for writes in progress, then closes LMDB. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.writing]);
    await this.root.close();
  }
}
