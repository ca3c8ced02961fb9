// The embedded, durable KV store on LMDB. The main thread is its only writer: a call's
// writes (buffered by its transaction, in a worker or here) are committed here, and
// commits from every scope that arrive in one event turn share one LMDB transaction and
// one flush. Runtime workers read the same environment directly (`local`). A scope's
// writers are serialized by its lock (scope-locks.js), taken as the call starts and held
// until its commit is visible; a commit resolves only once its writes are durable.
import { mkdirSync } from 'node:fs';
import { KvOpError } from './kv-error.js';
import { scopeKeys, type ScopeKeys } from './keys.js';
import { LmdbReader, openLmdbEnv, type LmdbEnv } from './lmdb-env.js';
import { ScopeLocks, slotOf } from './scope-locks.js';
import { KvTxn } from './txn.js';
import type { KvAccess, KvCommit, KvLimits, KvScope, KvStore, KvTransaction } from './types.js';

export interface LmdbKvStoreOptions {
  /** Directory of the LMDB environment (created if missing). */
  path: string;
  /** `grouped` (default) shares one durable LMDB commit among concurrent calls; `per-call` commits each alone with its own fsync (for comparison). */
  commitMode?: 'grouped' | 'per-call';
  /** The most a writing call waits for its scope's lock before it fails (default 10 s; the call's deadline lowers it). */
  lockTimeoutMs?: number;
}

export class LmdbKvStore implements KvStore {
  private readonly env: LmdbEnv;
  private readonly reader: LmdbReader;
  /** Write locks of the scopes, in shared memory: workers take them, this thread releases them. */
  readonly locks = new ScopeLocks();
  readonly lockTimeoutMs: number;
  private readonly commitMode: 'grouped' | 'per-call';
  /** Where workers open the same environment to read it. */
  readonly local: { path: string; commitMode: 'grouped' | 'per-call'; locks: SharedArrayBuffer };
  /** Commits started / made durable, numbered in order (a flush covers every earlier commit). */
  private startedEpoch = 0;
  private durableEpoch = 0;
  private durableWaiters: { epoch: number; resolve(): void }[] = [];
  private readonly writing = new Set<Promise<unknown>>();
  private closed = false;

  constructor(options: LmdbKvStoreOptions) {
    mkdirSync(options.path, { recursive: true });
    this.commitMode = options.commitMode ?? 'grouped';
    this.env = openLmdbEnv({ path: options.path, commitMode: this.commitMode });
    this.reader = new LmdbReader(this.env);
    this.lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.local = { path: options.path, commitMode: this.commitMode, locks: this.locks.sab };
  }

  /** A transaction served on this thread (the host-call bridge, and tests of the store). */
  begin(scope: KvScope, access: KvAccess, limits: KvLimits, options: { lockHeld?: boolean } = {}): KvTransaction {
    if (this.closed) throw new Error('the KV store is closed');
    return new MainThreadTransaction(this, scope, access, limits, options.lockHeld === true);
  }

  /** Serializes a scope's writers: resolves to the release, or fails after `timeoutMs` (at most lockTimeoutMs). */
  lockScope(scope: KvScope, timeoutMs = this.lockTimeoutMs): Promise<() => void> {
    return this.locks.acquire(lockIdOf(scope), Math.min(timeoutMs, this.lockTimeoutMs));
  }

  /** @internal the reader of committed data on this thread */
  get mainReader(): LmdbReader {
    return this.reader;
  }

  /**
   * Commits one call's writes atomically (the caller holds the scope's lock). `visible`
   * resolves once readers see them (release the lock then), `durable` once on disk.
   */
  commit(scope: KvScope | ScopeKeys, c: KvCommit): { visible: Promise<void>; durable: Promise<void> } {
    if (this.closed) {
      const e = Promise.reject(new KvOpError('the KV store is closed'));
      e.catch(() => {});
      return { visible: e, durable: e };
    }
    const keys = 'id' in scope ? scope : scopeKeys(scope);
    const epoch = ++this.startedEpoch;
    const { db, counts } = this.env;
    const write = () => {
      for (const [k, v] of c.writes) {
        if (v) db.put(k, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
        else db.remove(k);
      }
      // the count is kept once something counted it; every later commit keeps it exact
      const stored = counts.get(keys.below);
      const base = stored ?? c.baseCount;
      if (base !== undefined && (stored === undefined || c.entryDelta !== 0)) counts.put(keys.below, base + c.entryDelta);
    };
    const visible = this.commitMode === 'grouped' ? this.env.db.transaction(write).then(() => undefined) : Promise.resolve().then(() => void this.env.db.transactionSync(write));
    const durable = (async () => {
      await visible;
      await this.env.root.flushed;
      this.markDurable(epoch);
    })();
    // a failed commit is the caller's to report; the store stays usable
    durable.catch(() => this.markDurable(epoch));
    this.writing.add(durable);
    const forget = () => this.writing.delete(durable);
    durable.then(forget, forget);
    return { visible, durable };
  }

  /**
   * For a call that read committed data: resolves once every commit started so far is
   * durable (what it read may be one of them), or undefined when all are already.
   */
  readBarrier(): Promise<void> | undefined {
    const epoch = this.startedEpoch;
    if (this.durableEpoch >= epoch) return undefined;
    return new Promise((resolve) => this.durableWaiters.push({ epoch, resolve }));
  }

  private markDurable(epoch: number): void {
    if (epoch <= this.durableEpoch) return;
    this.durableEpoch = epoch;
    const ready = this.durableWaiters.filter((w) => w.epoch <= epoch);
    this.durableWaiters = this.durableWaiters.filter((w) => w.epoch > epoch);
    for (const w of ready) w.resolve();
  }

  /** Waits for writes in progress, then closes LMDB. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.writing]);
    for (const w of this.durableWaiters.splice(0)) w.resolve();
    await this.env.root.close();
  }
}

/** The id a scope's write lock is found by (tenant and module name, unambiguously). */
export function lockIdOf(scope: KvScope): string {
  return `${scope.tenant.length}:${scope.tenant}\u0000${scope.module}`;
}

/** The lock slot of a scope, for workers that take it themselves. */
export const lockSlotOf = (scope: KvScope): number => slotOf(lockIdOf(scope));

/** A transaction whose operations run on the main thread, over the same KvTxn the workers use. */
class MainThreadTransaction implements KvTransaction {
  private readonly txn: KvTxn;
  private release: (() => void) | undefined;
  private locking: Promise<void> | undefined;
  private state: 'open' | 'committed' | 'rolled-back' = 'open';
  private readonly keys: ScopeKeys;

  constructor(
    private readonly store: LmdbKvStore,
    private readonly scope: KvScope,
    access: KvAccess,
    limits: KvLimits,
    private readonly lockHeld: boolean,
  ) {
    this.keys = scopeKeys(scope);
    this.txn = new KvTxn(store.mainReader, this.keys, access, limits);
  }

  get didRead(): boolean {
    return this.txn.didRead;
  }

  async apply(op: string, args: unknown[]): Promise<unknown> {
    if (this.state !== 'open') throw new KvOpError(`${op}: the call's transaction is already finished`);
    // a transaction that may write holds its scope's lock from its first operation: its reads stay valid until it commits
    if (this.txn.access === 'write' && !this.lockHeld) await this.lock();
    return this.txn.apply(op, args);
  }

  private lock(): Promise<void> {
    this.locking ??= this.store.lockScope(this.scope).then((release) => {
      if (this.state === 'open') this.release = release;
      else release(); // the transaction ended while it waited
    });
    return this.locking;
  }

  async commit(): Promise<boolean> {
    if (this.state !== 'open') return false;
    this.state = 'committed';
    try {
      const c = this.txn.commitRecord();
      if (!c) return false;
      const { visible, durable } = this.store.commit(this.keys, c);
      await visible;
      this.unlock();
      await durable;
      return true;
    } finally {
      this.unlock();
    }
  }

  rollback(): void {
    if (this.state !== 'open') return;
    this.state = 'rolled-back';
    this.unlock();
  }

  private unlock(): void {
    this.release?.();
    this.release = undefined;
  }
}
