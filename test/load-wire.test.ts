// The batch load's hand-made messages (src/cli/load-wire.ts) are the protobuf the API
// declares: requests byte for byte as toBinary makes them, answers read as fromBinary would.
import test from 'ava';
import { create, toBinary } from '@bufbuild/protobuf';
import { StreamRequestSchema, StreamResponseSchema } from '../gen/plughost/v1/plugin_pb.js';
import { FailureKind } from '../gen/plughost/v1/outcome_pb.js';
import { batchRequestEncoder, readBatchAnswer } from '../src/cli/load-wire.js';
import { encodeStreamResponse } from '../src/service/stream-wire.js';

test('a batch request is the bytes toBinary makes, for first ids of every varint length', (t) => {
  const rows = [new Uint8Array(0), new Uint8Array([1, 2, 3]), new Uint8Array(300).fill(7)];
  const encode = batchRequestEncoder(rows);
  for (const firstId of [0n, 1n, 127n, 128n, 1n << 40n]) {
    const want = toBinary(StreamRequestSchema, create(StreamRequestSchema, { kind: { case: 'batch', value: { firstId, rows } } }));
    t.deepEqual([...encode(firstId)], [...want], `first id ${firstId}`);
  }
});

test('a batch answer is read as its id, each row\'s outcome in order, and a whole-batch failure', (t) => {
  const answer = create(StreamResponseSchema, {
    id: 300n,
    moduleHash: 'sha256:abc',
    batch: {
      firstId: 300n,
      outcomes: [
        { result: { case: 'value', value: new Uint8Array([9, 8]) } },
        { result: { case: 'guestError', value: 'no' } },
        { result: { case: 'failure', value: { kind: FailureKind.TRAP, message: 'boom', code: 'TRAP' } } },
        { result: { case: 'value', value: new Uint8Array(0) } },
      ],
    },
  });
  const r = readBatchAnswer(encodeStreamResponse(answer));
  t.is(r.id, 300n);
  t.is(r.failure, undefined);
  t.deepEqual(
    r.outcomes.map((o) => (o.case === 'value' ? [...o.value] : o.case === 'failure' ? { kind: o.value.kind, message: o.value.message } : o.value)),
    [[9, 8], 'no', { kind: FailureKind.TRAP, message: 'boom' }, []],
  );
  const refused = create(StreamResponseSchema, { id: 5n, batch: { firstId: 5n, failure: { kind: FailureKind.INVALID_ARGUMENT, message: 'too many rows', code: 'INVALID_ARGUMENT' } } });
  t.like(readBatchAnswer(encodeStreamResponse(refused)), { id: 5n, failure: 'too many rows', outcomes: [] });
});
