// A result bigger than a response can carry (grpc.maxSendMessageBytes) is caught before
// the call commits: the call fails RESULT_TOO_LARGE and nothing it wrote is kept. Before,
// the guest's writes were committed and then the client got an error from grpc-js.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { FailureKind } from '../gen/plughost/v1/outcome_pb.js';
import { readU32 } from './helpers/runtime.js';
import { clients, pushFixture, startPlughost } from './helpers/service.js';
import { RESPONSE_ENVELOPE_BYTES } from '../src/service/invoker.js';

const SEND_CAP = 64 * 1024;
const MAX_RESULT = SEND_CAP - RESPONSE_ENVELOPE_BYTES;
const enc = (s: string) => new TextEncoder().encode(s);

test('a result over the response cap fails RESULT_TOO_LARGE and commits nothing; one at the cap is sent and committed', async (t) => {
  const host = await startPlughost(t, { grpc: { maxSendMessageBytes: SEND_CAP } });
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'kv');
  const counter = async () => readU32(((await c.plugins.invoke({ module: 'kv', function: 'get', args: enc('n') })).result.value as Uint8Array).subarray(1));

  // `big` increments the counter, then answers its args back
  const atCap = await c.plugins.invoke({ module: 'kv', function: 'big', args: new Uint8Array(MAX_RESULT).fill(7) });
  t.is((atCap.result.value as Uint8Array).byteLength, MAX_RESULT, 'a result at the cap is sent whole');
  t.is(await counter(), 1, 'and its write committed');

  const e = ConnectError.from(await t.throwsAsync(c.plugins.invoke({ module: 'kv', function: 'big', args: new Uint8Array(MAX_RESULT + 1) })));
  t.is(Code[e.code], Code[Code.ResourceExhausted]);
  t.is(e.metadata.get('plughost-error-code'), 'RESULT_TOO_LARGE');
  t.regex(e.rawMessage, new RegExp(`the result is ${MAX_RESULT + 1} bytes, over the ${MAX_RESULT} bytes a response may carry .*nothing the call wrote was committed`));
  t.is(await counter(), 1, 'the over-cap call wrote nothing');

  // in a Stream the item fails in-band and the stream goes on
  async function* items() {
    yield { kind: { case: 'options' as const, value: { module: 'kv', function: 'big' } } };
    yield { kind: { case: 'item' as const, value: { id: 1n, args: new Uint8Array(MAX_RESULT + 1) } } };
    yield { kind: { case: 'item' as const, value: { id: 2n, args: enc('small') } } };
  }
  const outcomes = new Map<bigint, string>();
  for await (const r of c.plugins.stream(items())) {
    const o = r.outcome!.result;
    outcomes.set(r.id, o.case === 'failure' ? `failure:${FailureKind[o.value.kind]}` : o.case === 'value' ? new TextDecoder().decode(o.value) : String(o.case));
  }
  t.deepEqual(Object.fromEntries(outcomes), { 1: 'failure:RESULT_TOO_LARGE', 2: 'small' });
  t.is(await counter(), 2, 'only the item that could be answered wrote');
});
