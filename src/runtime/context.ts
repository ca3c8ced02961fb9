// The per-call host state. The service builds one from the request's metadata; the
// runtime installs it for exactly one call. The guest never sees the identity.
import type { KvAccess } from '../kv/types.js';

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
}
