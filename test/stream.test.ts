// PluginService.Stream end to end: in-band outcomes, windows, ordering, back-pressure.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { FailureKind } from '../gen/plughost/v1/outcome_pb.js';
import type { StreamRequest, StreamResponse } from '../gen/plughost/v1/plugin_pb.js';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StreamRequestSchema } from '../gen/plughost/v1/plugin_pb.js';
import { fixture } from './fixtures/build.js';
import { readU32, u32 } from './helpers/runtime.js';
import { clients, push, pushFixture, startPlughost } from './helpers/service.js';

type Req = MessageInitShape<typeof StreamRequestSchema>;
const options = (o: { module?: string; function?: string; window?: number; ordered?: boolean }): Req => ({ kind: { case: 'options', value: o } });
const item = (id: number, i: { module?: string; function?: string; args?: Uint8Array } = {}): Req => ({ kind: { case: 'item', value: { id: BigInt(id), ...i } } });

async function* from(reqs: Req[]): AsyncGenerator<Req> {
  yield* reqs;
}

async function collect(responses: AsyncIterable<StreamResponse>): Promise<StreamResponse[]> {
  const out: StreamResponse[] = [];
  for await (const r of responses) out.push(r);
  return out;
}

test('10k items with mixed outcomes: each id answered once, in-band, and one bad item never ends the stream', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'echo');
  await pushFixture(admin, 'faults');
  await pushFixture(admin, 'kv');
  const c = clients(t, host.address, host.tokens.add({ subject: 'engine', tenant: 't', admin: false, modules: ['echo', 'faults'], kv: 'write' }).token);
  const N = 10_000;
  // by i % 10: 0 guest error, 1 trap (every 100th; otherwise echo), 2 unknown module, 3 not permitted, else echo
  const expected = (i: number): string => {
    if (i % 10 === 0) return 'guest';
    if (i % 10 === 1) return i % 100 === 1 ? `failure:${FailureKind.TRAP}` : 'echo';
    if (i % 10 === 2) return `failure:${FailureKind.NOT_FOUND}`;
    if (i % 10 === 3) return `failure:${FailureKind.PERMISSION_DENIED}`;
    return 'echo';
  };
  const reqs: Req[] = [options({ module: 'echo', window: 64 })];
  for (let i = 0; i < N; i++) {
    const kind = expected(i);
    if (kind === 'guest') reqs.push(item(i, { module: 'faults', function: 'err' }));
    else if (kind.endsWith(`:${FailureKind.TRAP}`)) reqs.push(item(i, { module: 'faults', function: 'trap' }));
    else if (kind.endsWith(`:${FailureKind.NOT_FOUND}`)) reqs.push(item(i, { module: 'nope' }));
    else if (kind.endsWith(`:${FailureKind.PERMISSION_DENIED}`)) reqs.push(item(i, { module: 'kv' }));
    else reqs.push(item(i, { args: u32(i) }));
  }
  const results = await collect(c.plugins.stream(from(reqs)));
  t.is(results.length, N);
  const seen = new Set<number>();
  let wrong = 0;
  for (const r of results) {
    const id = Number(r.id);
    t.false(seen.has(id), `id ${id} answered twice`);
    seen.add(id);
    const o = r.outcome!.result;
    const got = o.case === 'value' ? (readU32(o.value) === id ? 'echo' : 'bad-echo') : o.case === 'guestError' ? 'guest' : `failure:${o.value?.kind}`;
    if (got !== expected(id)) wrong++;
  }
  t.is(seen.size, N);
  t.is(wrong, 0, 'every outcome is the expected one');
});

test('items finish out of order unless the stream asks for order; defaults from the options apply', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'faults', '1.0.0', await fixture('faults'), { limits: { maxExecutionMs: 300 } });
  await pushFixture(c, 'echo');
  // item 0 spins until its 300 ms limit; items 1..20 are quick echoes
  const reqs = (ordered: boolean) => [
    options({ module: 'echo', window: 8, ordered }),
    item(0, { module: 'faults', function: 'loop' }),
    ...Array.from({ length: 20 }, (_, i) => item(i + 1, { args: u32(i + 1) })),
  ];
  const unordered = (await collect(c.plugins.stream(from(reqs(false))))).map((r) => Number(r.id));
  t.not(unordered[0], 0, 'the slow item does not hold back the quick ones');
  t.is(unordered.length, 21);
  const ordered = await collect(c.plugins.stream(from(reqs(true))));
  t.deepEqual(ordered.map((r) => Number(r.id)), Array.from({ length: 21 }, (_, i) => i));
  t.is(ordered[0]!.outcome!.result.case, 'failure');
  t.is((ordered[0]!.outcome!.result.value as { kind: FailureKind }).kind, FailureKind.TIMEOUT);
  t.is(readU32(ordered[5]!.outcome!.result.value as Uint8Array), 5);
});

test('stream protocol errors end the stream with a status: late options, a window over the cap', async (t) => {
  const host = await startPlughost(t, { stream: { defaultWindow: 4, maxWindow: 16 } });
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  const late = await t.throwsAsync(collect(c.plugins.stream(from([item(1, { module: 'echo' }), options({ module: 'echo' })]))));
  t.is(ConnectError.from(late).code, Code.InvalidArgument);
  const wide = await t.throwsAsync(collect(c.plugins.stream(from([options({ module: 'echo', window: 17 }), item(1)]))));
  t.is(ConnectError.from(wide).code, Code.InvalidArgument);
  t.regex(ConnectError.from(wide).rawMessage, /maxWindow/);
  const atCap = await collect(c.plugins.stream(from([options({ module: 'echo', window: 16 }), item(1)])));
  t.is(atCap.length, 1, 'a window at the cap is accepted');
  const noToken = clients(t, host.address);
  t.is(ConnectError.from(await t.throwsAsync(collect(noToken.plugins.stream(from([item(1, { module: 'echo' })]))))).code, Code.Unauthenticated);
});

test.serial('back-pressure: a reader that pauses stops the server pulling items, its queue and heap stay bounded; 100k items all come back', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  globalThis.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const N = 100_000;
  let sent = 0;
  async function* items(): AsyncGenerator<Req> {
    yield options({ module: 'echo', window: 64 });
    const args = new Uint8Array(64);
    for (; sent < N; ) yield item(sent++, { args });
  }
  const it = c.plugins.stream(items())[Symbol.asyncIterator]();
  let received = 0;
  for (; received < 100; received++) await it.next();
  // stop reading: the client can only send as much as the server's window, the buffers
  // and HTTP/2 flow control hold, so `sent` must level off (without back-pressure the
  // generator would reach N within a second)
  let afterOne = -1;
  for (const until = Date.now() + 5000; sent !== afterOne && Date.now() < until; ) {
    afterOne = sent;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.is(sent, afterOne, `no more items were pulled while the reader paused (${afterOne} sent)`);
  // what the client could send: the window, plus what HTTP/2 flow control and the buffers on
  // both sides hold (~3,500 items of 64 bytes seen); a server that pulled regardless would
  // have all 100k
  t.true(afterOne - received < 10_000, `${afterOne - received} items beyond those read were sent while paused`);
  t.true(host.streamItemsInFlight <= 64, `the server holds ${host.streamItemsInFlight} items, at most its window of 64`);
  globalThis.gc?.();
  const heapWhilePaused = process.memoryUsage().heapUsed;
  t.true(heapWhilePaused - heapBefore < 64 * 2 ** 20, `heap grew ${((heapWhilePaused - heapBefore) / 2 ** 20).toFixed(0)} MiB while paused (client and server share this process)`);
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    received++;
  }
  t.is(received, N);
  t.log(`sent while paused: ${afterOne}; heap while paused ${(heapWhilePaused / 2 ** 20).toFixed(0)} MiB`);
});

test.serial('shutdown: a stream finishes the items it has, then ends UNAVAILABLE; unary calls in flight complete', async (t) => {
  const host = await startPlughost(t, { shutdownGraceMs: 5000 });
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'faults', '1.0.0', await fixture('faults'), { limits: { maxExecutionMs: 5000 } });
  await pushFixture(c, 'slow-init');
  // a stream whose client keeps it open; a unary call that takes a while (a new slow-init controller)
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  async function* open(): AsyncGenerator<Req> {
    yield options({ module: 'faults', window: 4 });
    for (let i = 0; i < 4; i++) yield item(i);
    await held;
  }
  const received: StreamResponse[] = [];
  const streamDone = (async () => {
    for await (const r of c.plugins.stream(open())) received.push(r);
  })();
  while (received.length < 4) await new Promise((r) => setTimeout(r, 10));
  const slow = c.plugins.invoke({ module: 'slow-init' });
  await new Promise((r) => setTimeout(r, 50));
  const closing = host.close();
  const [unary, stream] = await Promise.allSettled([slow, streamDone]);
  await closing;
  release();
  t.is(unary.status, 'fulfilled', `the unary call in flight got its answer: ${String((unary as PromiseRejectedResult).reason)}`);
  t.is(stream.status, 'rejected');
  t.is(ConnectError.from((stream as PromiseRejectedResult).reason).code, Code.Unavailable);
  t.is(received.length, 4, 'every item the server took got its result before the stream ended');
});
