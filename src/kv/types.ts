// What the runtime needs from a key-value store. An embedded store (LMDB) is read by the
// runtime workers directly and written by the main thread; any other store (a remote
// database) is reached from the workers through the main thread's host-call bridge, so
// its operations may be async.
export { KvOpError } from './kv-error.js';
import type { PlughostError } from '../errors.js';

/** What a caller may do with KV; lowered to read for functions that are not writeable. */
export type KvAccess = 'none' | 'read' | 'write';

/** Whose keys: a guest never names its scope and cannot leave it. */
export interface KvScope {
  tenant: string;
  /** The module *name*: versions of one module share their state. */
  module: string;
}

export interface KvLimits {
  maxKeyBytes: number;
  maxValueBytes: number;
  maxEntriesPerScope: number;
  maxBatchItems: number;
  maxRangeEntries: number;
}

/** A stored key (scope prefix included) and its new value, or null for a deletion. */
export type KvWrite = [Buffer, Uint8Array | null];

/** One call's writes, as its transaction hands them to the store. */
export interface KvCommit {
  writes: KvWrite[];
  /** Change in the scope's entry count. */
  entryDelta: number;
  /** The scope's entry count before the writes, if the transaction counted it. */
  baseCount?: number | undefined;
}

/** One invocation's view of its scope: reads see its own writes; nothing is visible to others before commit. */
/** A point in a transaction to go back to (see KvTransaction.savepoint). */
export interface Savepoint {
  undo(): void;
  release(): void;
}

export interface KvTransaction {
  /** Runs one host import by its jco name (`kvGet`, `kvSetBatch`...). Throws KvOpError for a guest-visible err. */
  apply(op: string, args: unknown[]): Promise<unknown>;
  /** Whether it read committed data (its answer then waits until that data is durable). */
  readonly didRead: boolean;
  /**
   * Set when the store itself failed under the transaction (a shared database unreachable,
   * a serialization conflict), not a refusal of the guest's: the call then fails with it
   * (UNAVAILABLE), whatever the guest answered after its import's err.
   */
  readonly failure?: PlughostError | undefined;
  /** Makes the writes visible and durable; resolves once they are on disk, to whether there were any. */
  commit(): Promise<boolean>;
  /** Forgets the writes. Safe to call more than once, and after commit (then it does nothing). */
  rollback(): void;
  /**
   * Marks where the transaction stands; the function returned takes it back there (the
   * writes made since are forgotten). A call made with `run` that fails undoes its writes
   * to a transaction of its caller's tree this way (`undo`); one that succeeds lets it go
   * (`release`). Exactly one of the two is called.
   */
  savepoint(): Savepoint;
}

export interface KvStore {
  /** A transaction whose operations run on the calling thread. `lockHeld`: the caller holds the scope's lock. */
  begin(scope: KvScope, access: KvAccess, limits: KvLimits, options?: { lockHeld?: boolean }): KvTransaction;
  /** Serializes a scope's writers; resolves to the release, or fails with KvOpError after `timeoutMs` (capped by the store's own limit). */
  lockScope(scope: KvScope, timeoutMs?: number): Promise<() => void>;
  /** Commits writes made by a transaction elsewhere (a worker); the caller holds the scope's lock. */
  commit(scope: KvScope, c: KvCommit): { visible: Promise<void>; durable: Promise<void> };
  /** Resolves once all data a reader could have seen is durable; undefined when it already is. */
  readBarrier(): Promise<void> | undefined;
  /** Set when runtime workers can open the store themselves and read it directly. */
  readonly local?: { path: string; commitMode: 'grouped' | 'per-call' };
  /**
   * With `local`: the writes of the scope's commits not yet readable in the store, for the
   * holder of its lock to read through (a worker's reads of the store alone would miss them).
   */
  overlayOf?(scope: KvScope): [Buffer, Uint8Array | null][] | undefined;
  close(): Promise<void>;
}
