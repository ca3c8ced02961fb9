// The one table from plughost's error codes to what a client sees: a gRPC status for a
// unary call, and an in-band FailureKind (with the code itself) for one item or row of a
// Stream. The README shows it.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { FailureKind } from '../../gen/plughost/v1/outcome_pb.js';
import { PlughostError, isPlughostError, messageOf, type ErrorCode } from '../errors.js';

export const ERROR_TABLE: Record<ErrorCode, { grpc: status; stream: FailureKind }> = {
  TRAP: { grpc: status.ABORTED, stream: FailureKind.TRAP },
  TIMEOUT: { grpc: status.DEADLINE_EXCEEDED, stream: FailureKind.TIMEOUT },
  MEMORY_LIMIT: { grpc: status.RESOURCE_EXHAUSTED, stream: FailureKind.MEMORY_LIMIT },
  POOL_EXHAUSTED: { grpc: status.RESOURCE_EXHAUSTED, stream: FailureKind.POOL_EXHAUSTED },
  INIT_FAILED: { grpc: status.FAILED_PRECONDITION, stream: FailureKind.INIT_FAILED },
  INVALID_MODULE: { grpc: status.INVALID_ARGUMENT, stream: FailureKind.INVALID_ARGUMENT },
  INVALID_ARGUMENT: { grpc: status.INVALID_ARGUMENT, stream: FailureKind.INVALID_ARGUMENT },
  NOT_FOUND: { grpc: status.NOT_FOUND, stream: FailureKind.NOT_FOUND },
  ALREADY_EXISTS: { grpc: status.ALREADY_EXISTS, stream: FailureKind.INVALID_ARGUMENT },
  UNAUTHENTICATED: { grpc: status.UNAUTHENTICATED, stream: FailureKind.PERMISSION_DENIED },
  PERMISSION_DENIED: { grpc: status.PERMISSION_DENIED, stream: FailureKind.PERMISSION_DENIED },
  FAILED_PRECONDITION: { grpc: status.FAILED_PRECONDITION, stream: FailureKind.INVALID_ARGUMENT },
  UNAVAILABLE: { grpc: status.UNAVAILABLE, stream: FailureKind.UNAVAILABLE },
  CANCELLED: { grpc: status.CANCELLED, stream: FailureKind.CANCELLED },
  RESULT_TOO_LARGE: { grpc: status.RESOURCE_EXHAUSTED, stream: FailureKind.RESULT_TOO_LARGE },
  INTERNAL: { grpc: status.INTERNAL, stream: FailureKind.INTERNAL },
};

/** Anything thrown below the edge, as a PlughostError (unknown errors are INTERNAL). */
export function asPlughostError(e: unknown): PlughostError {
  return isPlughostError(e) ? e : new PlughostError('INTERNAL', messageOf(e), { cause: e });
}

/** A grpc-js error for a unary or streaming call: the status, the message, and the plughost code in `plughost-error-code`. */
export function toServiceError(e: unknown): Partial<ServiceError> {
  const err = asPlughostError(e);
  const metadata = new Metadata();
  metadata.set('plughost-error-code', err.code);
  return { code: ERROR_TABLE[err.code].grpc, details: err.message, metadata };
}

/** An in-band failure: the FailureKind, the message, and the code a unary call would carry in `plughost-error-code`. */
export function failureKindOf(e: unknown): { kind: FailureKind; message: string; code: ErrorCode } {
  const err = asPlughostError(e);
  return { kind: ERROR_TABLE[err.code].stream, message: err.message, code: err.code };
}
