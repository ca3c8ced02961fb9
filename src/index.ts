// The library entry (`import ... from 'plughost'`): the runtime without gRPC, as the
// README's library example uses it. Build a RuntimeManager, load component bytes, invoke.
// The gRPC service itself is 'plughost/service'.
export { RuntimeManager } from './runtime/manager.js';
export type { LoadOptions, LogLevel, ManagerStats, RuntimeManagerOptions, RuntimeObserver } from './runtime/manager.js';
export type { FunctionInfo, InvokeResult, PoolStats, Runtime } from './runtime/runtime.js';
export type { InvocationContext } from './runtime/context.js';
export type { ModuleLimits, ModuleLimitsInput, RuntimeOptions, RuntimeOptionsInput } from './runtime/options.js';
export { LmdbKvStore } from './kv/lmdb-store.js';
export type { LmdbKvStoreOptions } from './kv/lmdb-store.js';
// the shared store: open the database (its schema is created or migrated), then the store on it; close both
export { PgDatabase } from './pg/db.js';
export type { PgOptions } from './pg/db.js';
export { PgKvStore } from './kv/pg-store.js';
export type { PgKvStoreOptions } from './kv/pg-store.js';
// for a store of one's own (a remote database): the interface and the refusal its guests see
export { KvOpError } from './kv/types.js';
export type { KvAccess, KvCommit, KvLimits, KvScope, KvStore, KvTransaction, KvWrite } from './kv/types.js';
export { ERROR_CODES, PlughostError, isPlughostError } from './errors.js';
export type { ErrorCode } from './errors.js';
