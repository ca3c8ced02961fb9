// The embedded, durable KV store on LMDB. The main thread is its only writer: a call's
// writes (buffered by its transaction, in a worker or here) are committed here, and
// commits from every scope that arrive in one event turn share one LMDB transaction and
// one flush. Runtime workers read the same environment directly (`local`). A scope's
// writers are serialized by its lock (scope-locks.ts). A writer in a worker holds it only
// until its reply is in: its commit then goes on in the background, and the next writer
// reads through it (overlayOf) until LMDB has it, so a scope's writers do not wait for
// one another's commits. A commit that fails fails every later one of its scope that read
// through it. A commit resolves only once its writes are durable.
import { mkdirSync } from 'node:fs';
import { KvOpError } from './kv-error.js';
import { scopeId, scopeKeys, type ScopeKeys } from './keys.js';
import { LmdbReader, openLmdbEnv, type LmdbEnv } from './lmdb-env.js';
import { ScopeLocks } from './scope-locks.js';
import { KvTxn } from './txn.js';
import type { KvAccess, KvCommit, KvLimits, KvScope, KvStore, KvTransaction, Savepoint } from './types.js';

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
  private readonly locks = new ScopeLocks();
  readonly lockTimeoutMs: number;
  private readonly commitMode: 'grouped' | 'per-call';
  /** Where workers open the same environment to read it. */
  readonly local: { path: string; commitMode: 'grouped' | 'per-call' };
  /** Each scope's commits started and not yet in LMDB, oldest first. */
  private readonly pending = new Map<string, PendingCommit[]>();
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
    this.local = { path: options.path, commitMode: this.commitMode };
  }

  /** A transaction served on this thread (the host-call bridge, and tests of the store). */
  begin(scope: KvScope, access: KvAccess, limits: KvLimits, options: { lockHeld?: boolean } = {}): KvTransaction {
    if (this.closed) throw new Error('the KV store is closed');
    return new MainThreadTransaction(this, scope, access, limits, options.lockHeld === true);
  }

  /** Serializes a scope's writers: resolves to the release, or fails after `timeoutMs` (at most lockTimeoutMs). */
  lockScope(scope: KvScope, timeoutMs = this.lockTimeoutMs): Promise<() => void> {
    return this.locks.acquire(scopeId(scope), Math.min(timeoutMs, this.lockTimeoutMs));
  }

  /**
   * The writes of the scope's commits not yet in LMDB, oldest first (undefined: none), for
   * the holder of its lock to read through: every one of them is in LMDB before its own.
   */
  overlayOf(scope: KvScope): [Buffer, Uint8Array | null][] | undefined {
    const list = this.pending.get(scopeId(scope));
    if (!list) return undefined;
    return list.length === 1 ? list[0]!.writes : list.flatMap((p) => p.writes);
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
    const list = this.pending.get(keys.id) ?? [];
    const entry: PendingCommit = { writes: c.writes, failed: false, after: list.at(-1) };
    list.push(entry);
    this.pending.set(keys.id, list);
    const write = () => {
      // this call may have read the earlier commit's writes: if that one failed, so does this
      const afterFailed = entry.after?.failed;
      entry.after = undefined;
      try {
        if (afterFailed) throw new KvOpError('an earlier commit of this KV scope, which this call may have read, failed');
        for (const [k, v] of c.writes) {
          if (v) db.put(k, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
          else db.remove(k);
        }
        // the count is kept once something counted it; every later commit keeps it exact
        const stored = counts.get(keys.below);
        const base = stored ?? c.baseCount;
        if (base !== undefined && (stored === undefined || c.entryDelta !== 0)) counts.put(keys.below, base + c.entryDelta);
      } catch (e) {
        // known at once to the scope's next commit, which may run in the same LMDB transaction
        entry.failed = true;
        throw e;
      }
    };
    const done = () => {
      entry.after = undefined;
      list.splice(list.indexOf(entry), 1);
      if (list.length === 0 && this.pending.get(keys.id) === list) this.pending.delete(keys.id);
    };
    const committing = this.commitMode === 'grouped' ? this.env.db.transaction(write) : Promise.resolve().then(() => this.env.db.transactionSync(write));
    const visible = committing.then(done, (e: unknown) => {
      entry.failed = true;
      done();
      throw e;
    });
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

/** A commit on its way into LMDB. */
interface PendingCommit {
  writes: [Buffer, Uint8Array | null][];
  failed: boolean;
  /** The scope's commit before it, which its call may have read through. */
  after: PendingCommit | undefined;
}

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

  savepoint(): Savepoint {
    const t = this.txn;
    const saved = { buffer: new Map(t.buffer), entryDelta: t.entryDelta };
    return {
      undo: () => {
        t.buffer = new Map(saved.buffer);
        t.entryDelta = saved.entryDelta;
      },
      release: () => {},
    };
  }

  private unlock(): void {
    this.release?.();
    this.release = undefined;
  }
}
