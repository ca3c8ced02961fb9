// The hand-written StreamResponse encoder gives exactly protobuf-es's bytes, for every shape
// an answer can take (its speed is measured, not tested: see src/service/stream-wire.ts).
import test from 'ava';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { CallOutcomeSchema, FailureKind, type CallOutcome } from '../gen/plughost/v1/outcome_pb.js';
import { StreamResponseSchema, type StreamResponse } from '../gen/plughost/v1/plugin_pb.js';
import { encodeStreamResponse } from '../src/service/stream-wire.js';

/** A seeded generator (mulberry32), so a failure can be replayed. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

const IDS = [0n, 1n, 127n, 128n, 300n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];
const TEXTS = ['', 'boom', 'é', '行', '😀 row said no', 'x'.repeat(200), 'a\uD800b'];
const SIZES = [0, 1, 127, 128, 16_383, 16_384, 2_097_152];

function outcome(r: () => number): CallOutcome {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  switch (Math.floor(r() * 4)) {
    case 0:
      return create(CallOutcomeSchema, { result: { case: 'value', value: new Uint8Array(pick(SIZES)).fill(7) } });
    case 1:
      return create(CallOutcomeSchema, { result: { case: 'guestError', value: pick(TEXTS) } });
    case 2:
      return create(CallOutcomeSchema, { result: { case: 'failure', value: { kind: pick([0, FailureKind.TRAP, FailureKind.RESULT_TOO_LARGE]), message: pick(TEXTS), code: pick(['', 'TRAP', 'INVALID_MODULE']) } } });
    default:
      return create(CallOutcomeSchema, {});
  }
}

function response(r: () => number): StreamResponse {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const hash = pick(['', `sha256:${'ab'.repeat(32)}`]);
  const kind = r();
  if (kind < 0.1) {
    const vars = new Uint8Array(pick(SIZES)).fill(9);
    return create(StreamResponseSchema, { hostCall: { hostCallId: pick(IDS), itemId: pick(IDS), query: pick(TEXTS), vars, timeoutMs: pick([0, 1, 127, 128, 2 ** 32 - 1]) } });
  }
  if (kind < 0.15) return create(StreamResponseSchema, { hostAnswerRefused: { hostCallId: pick(IDS), message: pick(TEXTS) } });
  if (r() < 0.4) return create(StreamResponseSchema, { id: pick(IDS), moduleHash: hash, outcome: r() < 0.9 ? outcome(r) : undefined });
  const rows = Math.floor(r() * 6);
  return create(StreamResponseSchema, {
    id: pick(IDS),
    moduleHash: hash,
    batch: {
      firstId: pick(IDS),
      ids: r() < 0.5 ? Array.from({ length: rows }, () => pick(IDS)) : [],
      outcomes: r() < 0.8 ? Array.from({ length: rows }, () => outcome(r)) : [],
      failure: r() < 0.2 ? { kind: FailureKind.NOT_FOUND, message: pick(TEXTS), code: 'NOT_FOUND' } : undefined,
    },
  });
}

test('the encoder gives the bytes toBinary gives: items, batches, failures, host calls, refused answers, every id width, multi-byte lengths and text', (t) => {
  const r = random(14);
  let differ = 0;
  for (let i = 0; i < 2000; i++) {
    const msg = response(r);
    const ours = encodeStreamResponse(msg);
    const theirs = toBinary(StreamResponseSchema, msg);
    if (Buffer.compare(ours, theirs) !== 0) {
      if (differ++ === 0) t.log('first to differ:', JSON.stringify(msg, (_, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? `<${v.length} bytes>` : v)));
    }
  }
  t.is(differ, 0, 'responses whose bytes differ');
  // and they read back as the message
  const msg = create(StreamResponseSchema, { id: 7n, moduleHash: 'sha256:x', batch: { firstId: 7n, ids: [2n ** 64n - 1n], outcomes: [outcome(random(1))] } });
  t.deepEqual(fromBinary(StreamResponseSchema, encodeStreamResponse(msg)), msg);
});
