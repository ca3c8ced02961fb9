// What the runtime needs from a key-value store. The store may live anywhere (this
// process, a remote database): host imports reach it through the main thread's bridge,
// so every operation may be async.
import type { KvAccess } from '../runtime/protocol.js';

export type { KvAccess };

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

/** One invocation's view of its scope: reads see its own writes; nothing is visible to others before commit. */
export interface KvTransaction {
  /** Runs one host import by its jco name (`kvGet`, `kvSetBatch`...). Throws KvOpError for a guest-visible err. */
  apply(op: string, args: unknown[]): Promise<unknown>;
  /** Makes the writes visible and durable; resolves once they are on disk. */
  commit(): Promise<void>;
  /** Forgets the writes. Safe to call more than once, and after commit (then it does nothing). */
  rollback(): void;
}

export interface KvStore {
  begin(scope: KvScope, access: KvAccess, limits: KvLimits): KvTransaction;
  close(): Promise<void>;
}

/** A refusal the guest sees as err(message): a limit, a denied write, a bad argument. */
export class KvOpError extends Error {
  override name = 'KvOpError';
}
