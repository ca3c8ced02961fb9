// A Stream's in-band outcomes: what a row's result becomes on the wire, and how the outcomes
// of one batch are kept within one response (grpc.maxSendMessageBytes).
import { create } from '@bufbuild/protobuf';
import { CallFailureSchema, CallOutcomeSchema, type CallFailure, type CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';
import { PlughostError } from '../errors.js';
import type { RowOutcome } from '../runtime/runtime.js';
import { failureKindOf } from './status.js';
import { fieldBytes, outcomeBytes } from './stream-wire.js';

export function failureOf(e: unknown): CallFailure {
  return create(CallFailureSchema, failureKindOf(e));
}

export function failureOutcome(e: unknown): CallOutcome {
  return create(CallOutcomeSchema, { result: { case: 'failure', value: failureOf(e) } });
}

/**
 * A row's outcome as a message. The two common cases are written as the plain object
 * `create` would make (protobuf-es messages are plain objects): `create` per row was ~6% of
 * the gRPC thread in a batch stream.
 */
export function outcomeOf(r: RowOutcome): CallOutcome {
  if (r.ok) return { $typeName: CallOutcomeSchema.typeName, result: { case: 'value', value: r.value } } as CallOutcome;
  if ('failure' in r) return failureOutcome(r.failure);
  return { $typeName: CallOutcomeSchema.typeName, result: { case: 'guestError', value: r.guestError } } as CallOutcome;
}

/** The outcome of a row that ran but whose result does not fit in its batch's response beside the others'. */
const NOT_SENT = failureOutcome(
  new PlughostError('RESULT_TOO_LARGE', "not sent: the batch's results together are over grpc.maxSendMessageBytes (this row ran; send fewer rows per batch)"),
);

/** Bytes one outcome takes in a StreamBatchResult (as an entry of `outcomes`). */
const entryBytes = (o: CallOutcome): number => fieldBytes(outcomeBytes(o));

/**
 * The most a StreamResponse carrying a batch result takes besides its outcomes: the id, a
 * 71-character module hash, the batch field, its first_id (varints of up to 10 bytes and
 * their tags and lengths), and each explicit id echoed.
 */
export function batchEnvelopeBytes(ids: number): number {
  return 128 + (ids ? 6 + 10 * ids : 0);
}

/** The least a row's outcome may take in a batch's response: what fitOutcomes holds back for each row to come. */
export const rowReserveBytes = (): number => entryBytes(NOT_SENT);

/** The most rows whose outcomes are sure to fit in a response of `maxBytes`, whatever they return. */
export function answerableRows(maxBytes: number, ids: number): number {
  return Math.floor((maxBytes - batchEnvelopeBytes(ids)) / entryBytes(NOT_SENT));
}

/**
 * Keeps a batch's outcomes within `budget` bytes, in row order: a row whose outcome would not
 * leave room for the rest (each at least a short failure) fails RESULT_TOO_LARGE instead.
 * The batch must have at most `answerableRows` rows.
 */
export function fitOutcomes(outcomes: CallOutcome[], budget: number): void {
  const least = entryBytes(NOT_SENT);
  let used = 0;
  for (let i = 0; i < outcomes.length; i++) {
    const bytes = entryBytes(outcomes[i]!);
    if (used + bytes + (outcomes.length - i - 1) * least <= budget) used += bytes;
    else {
      outcomes[i] = NOT_SENT;
      used += least;
    }
  }
}
