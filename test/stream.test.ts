// PluginService.Stream end to end: in-band outcomes, windows, ordering, back-pressure, and
// what every item's answer carries (module hash, failure code). Batches: stream-batch.test.ts.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { FailureKind } from '../gen/plughost/v1/outcome_pb.js';
import type { StreamResponse } from '../gen/plughost/v1/plugin_pb.js';
import { PlughostError } from '../src/errors.js';
import { failureKindOf } from '../src/service/status.js';
import { fixture, withCustomSection } from './fixtures/build.js';
import { readU32, u32 } from './helpers/runtime.js';
import { clients, push, pushFixture, startPlughost } from './helpers/service.js';
import { Feed, collect, describe, from, item, options, type Req } from './helpers/stream.js';
import { settled, waitFor } from './helpers/wait.js';

test('10k items with mixed outcomes: each id answered once, in-band, and one bad item never ends the stream', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  const hashes = {
    echo: (await pushFixture(admin, 'echo')).module!.hash,
    faults: (await pushFixture(admin, 'faults')).module!.hash,
  };
  await pushFixture(admin, 'kv');
  const c = clients(t, host.address, (await host.tokens.add({ subject: 'engine', tenant: 't', admin: false, modules: ['echo', 'faults'], kv: 'write' })).token);
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
  let wrongCode = 0;
  let wrongHash = 0;
  for (const r of results) {
    const id = Number(r.id);
    t.false(seen.has(id), `id ${id} answered twice`);
    seen.add(id);
    const o = r.outcome!.result;
    const got = o.case === 'value' ? (readU32(o.value) === id ? 'echo' : 'bad-echo') : o.case === 'guestError' ? 'guest' : `failure:${o.value?.kind}`;
    if (got !== expected(id)) wrong++;
    // the code is the one a unary call would carry in plughost-error-code
    if (o.case === 'failure' && o.value.code !== FailureKind[o.value.kind]) wrongCode++;
    // the hash of the module that served it; none when the module was not found or not permitted
    const hash = got === 'echo' ? hashes.echo : got === 'guest' || got === `failure:${FailureKind.TRAP}` ? hashes.faults : '';
    if (r.moduleHash !== hash) wrongHash++;
  }
  t.is(seen.size, N);
  t.is(wrong, 0, 'every outcome is the expected one');
  t.is(wrongCode, 0, 'every failure carries its code');
  t.is(wrongHash, 0, 'every answer carries the hash of the module that served it');
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

test('stream protocol errors end the stream with a status: late options, no token', async (t) => {
  const host = await startPlughost(t, { stream: { defaultWindow: 4, maxWindow: 16 } });
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  let header = null as string | null;
  const late = await t.throwsAsync(collect(c.plugins.stream(from([item(1, { module: 'echo' }), options({ module: 'echo' })]), { onHeader: (h) => (header = h.get('plughost-window')) })));
  t.is(ConnectError.from(late).code, Code.InvalidArgument);
  t.is(header, '4', 'the window granted is in the headers, sent when the first message was handled');
  // connect-node gives a failed call's headers and trailers as one set: the window is in each
  t.is(ConnectError.from(late).metadata.get('plughost-window'), '4, 4', 'and in the trailers of a stream that failed too');
  const noToken = clients(t, host.address);
  t.is(ConnectError.from(await t.throwsAsync(collect(noToken.plugins.stream(from([item(1, { module: 'echo' })]))))).code, Code.Unauthenticated);
});

test('a window over stream.maxWindow is lowered to it, and the window granted is in the headers and trailers', async (t) => {
  const host = await startPlughost(t, { stream: { defaultWindow: 3, maxWindow: 4 } });
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  const granted = async (reqs: Req[]) => {
    let header = null as string | null;
    let trailer = null as string | null;
    const results = await collect(c.plugins.stream(from(reqs), { onHeader: (h) => (header = h.get('plughost-window')), onTrailer: (h) => (trailer = h.get('plughost-window')) }));
    t.is(results.length, reqs.length - (reqs[0]!.kind?.case === 'options' ? 1 : 0), 'every item answered');
    t.is(header, trailer, 'headers and trailers agree');
    return header;
  };
  t.is(await granted([options({ module: 'echo', window: 4 }), item(1)]), '4', 'at the cap: granted as asked');
  t.is(await granted([options({ module: 'echo', window: 5 }), item(1)]), '4', 'just past the cap: lowered to it, the stream runs');
  t.is(await granted([options({ module: 'echo', window: 4_000_000_000 }), item(1)]), '4');
  t.is(await granted([options({ module: 'echo' }), item(1)]), '3', 'no window: the server default');
  t.is(await granted([item(1, { module: 'echo' })]), '3', 'no options at all: the server default');
  t.is(await granted([options({ module: 'echo', window: 2 }), item(1), item(2)]), '2');

  // the lowered window is the one in force: a module with one controller, one item looping
  // on it and nine behind; the server pulls 4 (the cap) of the 10, not the 1,000 asked for
  await push(c, 'faults', '1.0.0', withCustomSection(await fixture('faults'), 'pool-of-one'), { limits: { maxPoolSize: 1, maxExecutionMs: 1500 } });
  const pool = async () => (await c.modules.describeModule({ module: 'faults' })).pool!;
  const done = collect(c.plugins.stream(from([options({ module: 'faults', window: 1000 }), item(0, { function: 'loop' }), ...Array.from({ length: 9 }, (_, i) => item(i + 1))])));
  t.true(await waitFor(async () => (await pool()).waiters === 3, 10_000, 10), 'three items wait for the controller behind the loop');
  t.is(host.streamRowsInFlight, 4);
  await new Promise((r) => setTimeout(r, 300));
  t.is((await pool()).waiters, 3, 'and no more are pulled while the window is full');
  t.is(host.streamRowsInFlight, 4);
  const results = await done;
  t.is(results.length, 10);
  t.is(results.filter((r) => r.outcome?.result.case === 'value').length, 9, 'the rest ran once the loop hit its limit');
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
  const { value: afterOne, steady } = await settled(() => sent);
  t.true(steady, `no more items were pulled while the reader paused (${afterOne} sent)`);
  // what the client could send: the window, plus what HTTP/2 flow control and the buffers on
  // both sides hold (~3,500 items of 64 bytes seen); a server that pulled regardless would
  // have all 100k
  t.true(afterOne - received < 10_000, `${afterOne - received} items beyond those read were sent while paused`);
  t.true(host.streamRowsInFlight <= 64, `the server holds ${host.streamRowsInFlight} items, at most its window of 64`);
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

test("an item's function: given, else the stream's for the stream's module (the same string), else that module's default", async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'faults', '1.0.0', await fixture('faults'), { limits: { maxPoolSize: 1 } });
  const results = await collect(
    c.plugins.stream(
      from([
        options({ module: 'faults', function: 'err', ordered: true }),
        item(1),
        item(2, { module: 'faults' }),
        item(3, { module: 'faults@1.0.0' }),
        item(4, { module: 'faults', function: 'trap' }),
      ]),
    ),
  );
  const got = results.map((r) => describe(r.outcome));
  t.is(got[0], 'guest:boom: the guest said no', 'no module: the stream\'s function');
  t.is(got[1], 'guest:boom: the guest said no', 'the stream\'s module named again: still the stream\'s function');
  // faults' default function answers its call count, so it is not the stream's `err`
  t.is(readU32(results[2]!.outcome!.result.value as Uint8Array), 3, 'another module string: that module\'s default function');
  t.is(got[3], 'TRAP/TRAP', 'a function of its own wins');
});

test('every in-band failure carries the code a unary call would put in plughost-error-code, also where kinds collapse', (t) => {
  for (const code of ['INVALID_MODULE', 'ALREADY_EXISTS', 'FAILED_PRECONDITION', 'UNAUTHENTICATED', 'TIMEOUT'] as const) {
    const f = failureKindOf(new PlughostError(code, 'x'));
    t.is(f.code, code);
  }
  t.is(failureKindOf(new PlughostError('INVALID_MODULE', 'x')).kind, FailureKind.INVALID_ARGUMENT, 'the kind is coarser than the code');
  t.is(failureKindOf(new Error('a bug')).code, 'INTERNAL');
});

test('two items in flight with one id: the second is refused in-band and not run; once answered, the id may come again', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'faults', '1.0.0', withCustomSection(await fixture('faults'), 'pool-of-one'), { limits: { maxPoolSize: 1, maxExecutionMs: 1000 } });
  const feed = new Feed();
  feed.send(options({ module: 'faults' }), item(7, { function: 'loop' }), item(7), item(8));
  const got: StreamResponse[] = [];
  for await (const r of c.plugins.stream(feed)) {
    got.push(r);
    // both answers for 7 and the one for 8 are in: send 7 again
    if (got.length === 3) {
      feed.send(item(7));
      feed.end();
    }
  }
  t.is(got.length, 4);
  const dup = got[0]!;
  t.is(dup.id, 7n);
  t.is(describe(dup.outcome), 'INVALID_ARGUMENT/INVALID_ARGUMENT', 'the duplicate is answered first: it never waited for a controller');
  t.regex((dup.outcome!.result.value as { message: string }).message, /id 7 is already in flight on this stream/);
  const rest = new Map(got.slice(1, 3).map((r) => [r.id, r.outcome]));
  t.is(describe(rest.get(7n)), 'TIMEOUT/TIMEOUT', 'the first item 7 ran');
  // the loop's controller was dropped; item 8 made a new one. Had the duplicate run, it
  // would have counted on that controller first and item 8 would answer 2
  t.is(readU32(rest.get(8n)!.result.value as Uint8Array), 1, 'the duplicate never ran');
  t.is(got[3]!.id, 7n);
  t.is(readU32(got[3]!.outcome!.result.value as Uint8Array), 2, 'id 7 again after its answer: run');
});

test("timeout_ms: an item's own time limit, and the stream's deadline still bounds it", async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'faults', '1.0.0', await fixture('faults'), { limits: { maxExecutionMs: 30_000 } });
  const pool = async () => (await c.modules.describeModule({ module: 'faults' })).pool!;
  // a 30 s module limit; the item asks for 300 ms
  const [own] = await collect(c.plugins.stream(from([options({ module: 'faults' }), item(1, { function: 'loop', timeoutMs: 300 })])));
  t.is(describe(own!.outcome), 'TIMEOUT/TIMEOUT');
  t.regex((own!.outcome!.result.value as { message: string }).message, /time limit of (2\d\d|300) ms/);
  t.is(Number((await pool()).droppedTimeout), 1);
  // a stream with a 1 s deadline, an item asking for 60 s: the deadline stops the loop long
  // before the module's 30 s limit would (the client sees the stream's DEADLINE_EXCEEDED)
  const cut = await t.throwsAsync(collect(c.plugins.stream(from([options({ module: 'faults' }), item(2, { function: 'loop', timeoutMs: 60_000 })]), { timeoutMs: 1000 })));
  t.is(ConnectError.from(cut).code, Code.DeadlineExceeded);
  t.true(await waitFor(async () => Number((await pool()).droppedTimeout) === 2, 15_000, 50), 'the loop was stopped by the stream\'s deadline');
  t.is((await pool()).inUse, 0);
});
