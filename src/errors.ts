// The one error type plughost throws across layers. Each code is translated to a gRPC
// status (and to a Stream's in-band outcome) once, at the edge: src/service/status.ts.

export const ERROR_CODES = [
  /** The guest crashed; its controller was discarded. */
  'TRAP',
  /** The call ran past its time limit; its worker was stopped. */
  'TIMEOUT',
  /** The guest hit its memory cap; its controller was discarded. */
  'MEMORY_LIMIT',
  /** No controller became free before the call's deadline. */
  'POOL_EXHAUSTED',
  /** The guest's `init` failed on a new controller. */
  'INIT_FAILED',
  /** The bytes are not a component plughost can run (malformed, core module, wrong world, foreign import). */
  'INVALID_MODULE',
  /** The request is malformed. */
  'INVALID_ARGUMENT',
  /** No such module, alias or function. */
  'NOT_FOUND',
  /** The thing being created exists already (with different content). */
  'ALREADY_EXISTS',
  /** The caller presented no valid token. */
  'UNAUTHENTICATED',
  /** The caller may not do this. */
  'PERMISSION_DENIED',
  /** The operation is refused in the current state (e.g. deleting a module in use). */
  'FAILED_PRECONDITION',
  /** The service or runtime is closing. */
  'UNAVAILABLE',
  /** The caller gave up. */
  'CANCELLED',
  /** The guest's result is over the response cap; the call's KV writes were rolled back. */
  'RESULT_TOO_LARGE',
  /** A bug or unexpected failure in plughost itself. */
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class PlughostError extends Error {
  override name = 'PlughostError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isPlughostError(e: unknown, code?: ErrorCode): e is PlughostError {
  return e instanceof PlughostError && (code === undefined || e.code === code);
}

export { messageOf } from './util/message-of.js';
