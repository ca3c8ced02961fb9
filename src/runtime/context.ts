// The per-call host state. The service builds one from the request's metadata; the
// runtime installs it for exactly one call. The guest never sees the identity.
import type { KvAccess } from '../kv/types.js';
import type { RunTarget } from './nested.js';

/** One `sql(query, vars)` a guest made, as whoever answers it is asked. */
export interface SqlRequest {
  query: string;
  vars: Uint8Array;
  /** The row of a batch the guest was running (0-based), or undefined for a single call. */
  row: number | undefined;
  /** How long the guest may wait for the answer: the lower of hostCallTimeoutMs and what is left of the call's time. */
  timeoutMs: number;
  /** Aborted when the guest stops waiting (timeout, the call ended or was cancelled): forget the request. */
  signal: AbortSignal;
}

/** The guest's answer: result bytes, or the err string its `sql` returns. */
export type SqlAnswer = { ok: Uint8Array } | { err: string };

export interface InvocationContext {
  /** Who is calling (from the token); used for logs, never passed to the guest. */
  subject: string;
  /** The tenant whose KV scope the call uses. */
  tenant: string;
  /** What the caller may do with KV; lowered to read for functions that are not writeable. */
  kvAccess: KvAccess;
  /** The module name whose KV scope the call uses (defaults to the Runtime's name). */
  moduleName?: string;
  /** Epoch ms after which the caller no longer wants an answer (gRPC deadline). */
  deadline?: number;
  /** Aborted when the caller goes away: stops a call still waiting for a controller. */
  signal?: AbortSignal;
  /** Correlates logs of one request. */
  requestId?: string;
  /**
   * The largest result the caller can be sent (e.g. the gRPC response cap): a bigger one
   * fails the call with RESULT_TOO_LARGE before anything is committed.
   */
  maxResultBytes?: number;
  /**
   * A batch whose results travel in one response: bytes held back in `maxResultBytes` for
   * each row still to come (the least its answer may take there), so that whoever sends the
   * response never has to drop a row that committed. 0 when absent.
   */
  resultRowReserve?: number;
  /**
   * Answers the guest's `sql` host calls (the engine that opened the Stream the call came
   * on, when it said it serves queries). Absent: `sql` returns err. Must not throw.
   */
  sql?(request: SqlRequest): Promise<SqlAnswer>;
  /**
   * Resolves the target of a guest's `run(module, function, ...)` under this caller's
   * identity (the service checks the token's module globs), or throws a PlughostError that
   * the guest gets as its err. Absent: `run` takes a hash of a loaded module, with this
   * call's KV access.
   */
  resolveRun?(module: string, fn: string | undefined): Promise<RunTarget>;
}
