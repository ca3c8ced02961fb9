// Batches on PluginService.Stream end to end: one answer per batch with one outcome per row,
// in row order; whole-batch refusals in-band; the window in rows; back-pressure;
// cancellation; the caps and their configuration.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import type { StreamResponse } from '../gen/plughost/v1/plugin_pb.js';
import { parseConfig } from '../src/service/config.js';
import { answerableRows } from '../src/service/stream-outcomes.js';
import { fixture } from './fixtures/build.js';
import { clients, push, pushFixture, startPlughost } from './helpers/service.js';
import { Feed, batch, collect, describe, describeFailure, from, item, options, type Req } from './helpers/stream.js';
import { settled, waitFor } from './helpers/wait.js';

const enc = (s: string) => new TextEncoder().encode(s);
const rows = (...r: string[]) => r.map(enc);

/** A batch answer as plain data: ids echoed, each row's outcome as text, or the whole batch's failure. */
function answer(r: StreamResponse) {
  const b = r.batch!;
  const failure = b.failure ? `${describeFailure(b.failure)}: ${b.failure.message}` : undefined;
  return { id: Number(r.id), firstId: Number(b.firstId), ids: b.ids.map(Number), outcomes: b.outcomes.map(describe), failure, hash: r.moduleHash };
}

/** How many calls the service counted for `module`, by outcome. */
async function callsOf(host: Awaited<ReturnType<typeof startPlughost>>, module: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await host.metrics.calls.get()).values) if (v.labels.module === module) out[String(v.labels.outcome)] = (out[String(v.labels.outcome)] ?? 0) + v.value;
  return out;
}

test('exactly once per row: values, guest errors, a trap and a timeout in one batch, each in its row; whole-batch NOT_FOUND; ids and module hash', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  const outcomes = (await push(c, 'outcomes', '1.0.0', await fixture('outcomes'), { limits: { maxExecutionMs: 1500 } })).module!.hash;
  const echo = (await pushFixture(c, 'echo')).module!.hash;
  const introspect = (await pushFixture(c, 'introspect')).module!.hash;
  // 1,000 rows, by i % 10: 3 guest error, 6 trap, else the row's own text back
  const big = Array.from({ length: 1000 }, (_, i) => (i % 10 === 3 ? 'e' : i % 10 === 6 ? 't' : `v${i}`));
  const expected = (i: number) => (i % 10 === 3 ? 'guest:row said no' : i % 10 === 6 ? 'TRAP/TRAP' : `v${i}`);
  const results = await collect(
    c.plugins.stream(
      from([
        options({ module: 'outcomes', window: 2048 }),
        batch({ firstId: 100, rows: rows('v-a', 'e', 't', 'v-b', 'l', 'v-c') }),
        item(1, { args: enc('an item') }),
        batch({ ids: [5, 3, 9], module: 'echo', rows: rows('a', 'b', 'c') }),
        batch({ firstId: 200, module: 'introspect', function: 'nope', rows: rows('x', 'y') }),
        batch({ firstId: 300, module: 'nope', rows: rows('x') }),
        batch({ firstId: 10_000, rows: big.map(enc) }),
      ]),
    ),
  );
  t.is(results.length, 6, 'one answer per item and per batch');
  const byId = new Map(results.map((r) => [Number(r.id), r]));
  t.deepEqual(answer(byId.get(100)!), {
    id: 100,
    firstId: 100,
    ids: [],
    outcomes: ['v-a', 'guest:row said no', 'TRAP/TRAP', 'v-b', 'TIMEOUT/TIMEOUT', 'v-c'],
    failure: undefined,
    hash: outcomes,
  }, 'each row in its place: the trap and the timeout fail only their own rows');
  t.is(describe(byId.get(1)!.outcome), 'an item');
  t.is(byId.get(1)!.batch, undefined);
  t.deepEqual(answer(byId.get(0)!), { id: 0, firstId: 0, ids: [5, 3, 9], outcomes: ['a', 'b', 'c'], failure: undefined, hash: echo }, 'explicit ids echoed, outcomes in row order');
  const notFound = answer(byId.get(200)!);
  t.regex(notFound.failure!, /^NOT_FOUND\/NOT_FOUND: introspect has no function nope/);
  t.deepEqual(notFound.outcomes, [], 'a whole-batch failure: no row outcomes');
  t.is(notFound.hash, introspect, 'the module was found: its hash');
  t.regex(answer(byId.get(300)!).failure!, /^NOT_FOUND\/NOT_FOUND: /);
  t.is(answer(byId.get(300)!).hash, '', 'no such module: no hash');
  const large = answer(byId.get(10_000)!);
  t.is(large.outcomes.length, 1000);
  t.deepEqual(large.outcomes.map((o, i) => (o === expected(i) ? '' : `${i}:${o}`)).filter(Boolean), [], 'each of 1,000 rows has its own outcome');
  // the service counted each row once
  const counted = await callsOf(host, 'outcomes');
  t.deepEqual(counted, { ok: 3 + 800 + 1, guest_error: 1 + 100, TRAP: 1 + 100, TIMEOUT: 1 });
});

test('ordered streams keep arrival order across items and batches; unordered ones answer as rows finish', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'outcomes', '1.0.0', await fixture('outcomes'), { limits: { maxExecutionMs: 1000 } });
  await pushFixture(c, 'echo');
  const reqs = (ordered: boolean): Req[] => [
    options({ module: 'echo', window: 64, ordered }),
    // the first batch holds a row that loops to its limit: everything after it is quicker
    batch({ firstId: 1, module: 'outcomes', rows: rows('v', 'l') }),
    item(3, { args: enc('3') }),
    batch({ ids: [7, 4], rows: rows('7', '4') }),
    item(5, { args: enc('5') }),
    batch({ firstId: 8, rows: rows('8', '9', '10') }),
  ];
  const ordered = await collect(c.plugins.stream(from(reqs(true))));
  t.deepEqual(ordered.map((r) => Number(r.id)), [1, 3, 0, 5, 8]);
  t.deepEqual(answer(ordered[0]!).outcomes, ['v', 'TIMEOUT/TIMEOUT']);
  t.deepEqual(answer(ordered[2]!).outcomes, ['7', '4']);
  t.deepEqual(answer(ordered[4]!).outcomes, ['8', '9', '10']);
  const unordered = await collect(c.plugins.stream(from(reqs(false))));
  t.is(unordered.length, 5);
  t.is(Number(unordered.at(-1)!.id), 1, 'the batch with the slow row is answered last');
});

test('caps at and just past their values: maxBatchRows, maxBatchBytes; bad ids, no rows, no module, not permitted: each refused in-band, and the stream goes on', async (t) => {
  const host = await startPlughost(t, { stream: { maxBatchRows: 4, maxBatchBytes: 40 } });
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'echo');
  await pushFixture(admin, 'kv');
  const c = clients(t, host.address, (await host.tokens.add({ subject: 'engine', tenant: 't', admin: false, modules: ['echo'], kv: 'none' })).token);
  const ten = 'x'.repeat(10);
  const results = await collect(
    c.plugins.stream(
      from([
        batch({ firstId: 1, module: 'echo', rows: rows(ten, ten, ten, ten) }),
        batch({ firstId: 10, module: 'echo', rows: rows('a', 'b', 'c', 'd', 'e') }),
        batch({ firstId: 20, module: 'echo', rows: rows(ten, ten, ten, ten + 'x') }),
        batch({ firstId: 30, ids: [30, 31], module: 'echo', rows: rows('a', 'b', 'c') }),
        batch({ firstId: 40, module: 'echo', rows: [] }),
        batch({ firstId: 50, rows: rows('a') }),
        batch({ firstId: 60, module: 'kv', rows: rows('a') }),
        item(70, { module: 'echo', args: enc('still here') }),
      ]),
    ),
  );
  const by = new Map(results.map((r) => [Number(r.id), r]));
  t.is(results.length, 8);
  t.deepEqual(answer(by.get(1)!).outcomes, [ten, ten, ten, ten], 'at both caps (4 rows, 40 bytes): run');
  const refused = (id: number, pattern: RegExp, code = 'INVALID_ARGUMENT') => {
    const a = answer(by.get(id)!);
    t.regex(a.failure ?? '', new RegExp(`^${code}/${code}: ${pattern.source}`), `batch ${id}`);
    t.deepEqual(a.outcomes, []);
    t.is(a.firstId, id, 'a refused batch still echoes its first id');
  };
  refused(10, /batch refused, no row was run: 5 rows is over the server's cap of 4 \(stream.maxBatchRows\)/);
  refused(20, /batch refused, no row was run: its rows hold 41 bytes, over the server's cap of 40 \(stream.maxBatchBytes\)/);
  refused(30, /.*it has 2 ids for 3 rows/);
  t.deepEqual(answer(by.get(30)!).ids, [30, 31]);
  refused(40, /.*it carries no rows/);
  refused(50, /the batch names no module and the stream options set none/);
  refused(60, /engine may not invoke kv/, 'PERMISSION_DENIED');
  t.is(answer(by.get(60)!).hash, '', 'a module the caller may not invoke: no hash');
  t.is(describe(by.get(70)!.outcome), 'still here', 'the stream went on');
});

test('configuration: stream.maxBatchRows, stream.maxBatchBytes (not above grpc.maxReceiveMessageBytes) and stream.maxWindow, with their defaults', (t) => {
  const defaults = parseConfig({}).stream;
  t.deepEqual(defaults, { defaultWindow: 64, maxWindow: 65_536, maxBatchRows: 8192, maxBatchBytes: 4 << 20 }, 'maxBatchBytes: the 4 MiB receive cap, under 16 MiB');
  t.is(parseConfig({ grpc: { maxReceiveMessageBytes: 64 << 20 } }).stream.maxBatchBytes, 16 << 20, 'a larger receive cap: 16 MiB');
  t.is(parseConfig({ grpc: { maxReceiveMessageBytes: 1 << 20 } }).stream.maxBatchBytes, 1 << 20, 'a smaller receive cap: that');
  t.is(parseConfig({ stream: { maxBatchBytes: 4 << 20 } }).stream.maxBatchBytes, 4 << 20, 'at the receive cap');
  t.throws(() => parseConfig({ stream: { maxBatchBytes: (4 << 20) + 1 } }), { message: /stream\.maxBatchBytes: 4194305 is over grpc\.maxReceiveMessageBytes \(4194304\)/ });
  t.throws(() => parseConfig({ stream: { maxBatchBytes: 0 } }), { message: /stream\.maxBatchBytes: / });
  t.is(parseConfig({ stream: { maxBatchRows: 1 << 20 } }).stream.maxBatchRows, 1 << 20);
  t.throws(() => parseConfig({ stream: { maxBatchRows: (1 << 20) + 1 } }), { message: /stream\.maxBatchRows: / });
  t.throws(() => parseConfig({ stream: { maxBatchRows: 0 } }), { message: /stream\.maxBatchRows: / });
  t.throws(() => parseConfig({ stream: { defaultWindow: 65_537 } }), { message: /stream\.defaultWindow \(65537\) is over stream\.maxWindow \(65536\)/ });
});

test('duplicate ids: repeated within a batch, or already in flight (an item, a row of another batch): refused in-band, not run', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  // one controller; the first row loops for 3 s, so the rows and batches behind it stay in flight
  await push(c, 'outcomes', '1.0.0', await fixture('outcomes'), { limits: { maxPoolSize: 1, maxExecutionMs: 3000 } });
  await pushFixture(c, 'echo');
  const feed = new Feed();
  feed.send(
    options({ module: 'outcomes', window: 1024 }),
    batch({ ids: [1, 2, 1], module: 'echo', rows: rows('a', 'b', 'c') }),
    batch({ firstId: 1000, rows: ['l', ...Array.from({ length: 99 }, () => 'v')].map(enc) }),
    batch({ firstId: 1100, rows: Array.from({ length: 100 }, () => enc('v')) }),
    item(5),
  );
  const got: StreamResponse[] = [];
  const reading = (async () => {
    for await (const r of c.plugins.stream(feed)) got.push(r);
  })();
  // the loop runs and the 200 rows and the item are in flight: now the duplicates
  t.true(await waitFor(() => host.streamRowsInFlight === 201 && got.length === 1, 10_000, 10), `${host.streamRowsInFlight} rows in flight`);
  feed.send(
    batch({ firstId: 1050, module: 'echo', rows: Array.from({ length: 100 }, () => enc('x')) }), // overlaps 1000..1099
    batch({ firstId: 1195, module: 'echo', rows: rows('x', 'y', 'z', 'w', 'u', 'v') }), // 1195..1200: 1195..1199 in flight
    batch({ firstId: 77, ids: [9, 1150], module: 'echo', rows: rows('x', 'y') }), // first_id only echoed
    batch({ firstId: 4, module: 'echo', rows: rows('x', 'y') }), // 4, 5: the item is in flight
    item(1099, { module: 'echo' }),
    item(1200, { module: 'echo', args: enc('free') }),
  );
  t.true(await waitFor(() => got.length === 7, 10_000, 10), 'the duplicates are answered at once, while the loop still runs');
  feed.end();
  await reading;
  const by = new Map(got.map((r) => [Number(r.id), r]));
  t.regex(answer(by.get(0)!).failure ?? '', /^INVALID_ARGUMENT\/INVALID_ARGUMENT: row id 1 appears twice in the batch: no row was run/);
  for (const [id, dup] of [[1050, 1050], [1195, 1195], [77, 1150], [4, 5]]) {
    const a = answer(by.get(id!)!);
    t.regex(a.failure ?? '', new RegExp(`^INVALID_ARGUMENT/INVALID_ARGUMENT: id ${dup} is already in flight on this stream`), `batch ${id}`);
  }
  t.regex(describe(by.get(1099)!.outcome), /^INVALID_ARGUMENT\/INVALID_ARGUMENT$/);
  t.is(describe(by.get(1200)!.outcome), 'free', 'an id next to those in flight runs');
  t.deepEqual(answer(by.get(1000)!).outcomes.slice(0, 2), ['TIMEOUT/TIMEOUT', 'v']);
  t.is(answer(by.get(1100)!).outcomes.length, 100);
  t.is(describe(by.get(5)!.outcome), '');
  // only what was not refused ran: on outcomes the loop, the 199 rows after it and item 5; on echo item 1200
  t.deepEqual(await callsOf(host, 'outcomes'), { TIMEOUT: 1, ok: 199 + 1 });
  t.deepEqual(await callsOf(host, 'echo'), { ok: 1 });
});

test('timeout_ms of a batch: rows not done by it fail TIMEOUT, bounded by the module limit as well', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'outcomes', '1.0.0', await fixture('outcomes'), { limits: { maxExecutionMs: 30_000 } });
  const [r] = await collect(c.plugins.stream(from([options({ module: 'outcomes' }), batch({ firstId: 1, rows: rows('v', 'l'), timeoutMs: 500 })])));
  t.deepEqual(answer(r!).outcomes, ['v', 'TIMEOUT/TIMEOUT'], 'the loop stopped at the batch\'s 500 ms, not the module\'s 30 s');
  const pool = (await c.modules.describeModule({ module: 'outcomes' })).pool!;
  t.is(Number(pool.droppedTimeout), 1);
});

test('a batch bigger than the window runs alone: admitted only when nothing else is in flight; a smaller one runs beside', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'outcomes', '1.0.0', await fixture('outcomes'), { limits: { maxExecutionMs: 2000 } });
  await pushFixture(c, 'echo');
  const feed = new Feed();
  feed.send(options({ module: 'echo', window: 4 }), item(0, { module: 'outcomes', args: enc('l') }));
  const got: StreamResponse[] = [];
  const reading = (async () => {
    for await (const r of c.plugins.stream(feed)) got.push(r);
  })();
  t.true(await waitFor(async () => (await c.modules.describeModule({ module: 'outcomes' })).pool!.inUse === 1, 10_000, 10), 'the loop runs');
  // 1 + 3 rows fit the window of 4; the 10-row batch has to wait until nothing is in flight
  feed.send(batch({ firstId: 10, rows: rows('a', 'b', 'c') }), batch({ firstId: 20, rows: Array.from({ length: 10 }, (_, i) => enc(String(i))) }));
  t.true(await waitFor(() => got.length === 1, 10_000, 10));
  t.is(Number(got[0]!.id), 10, 'the small batch ran beside the loop');
  t.is(host.streamRowsInFlight, 1, 'the big batch is not admitted while the loop runs');
  feed.end();
  await reading;
  t.deepEqual(got.map((r) => Number(r.id)), [10, 0, 20], 'the big batch (quick rows) ran only after the loop was answered');
  t.is(answer(got[2]!).outcomes.length, 10);
});

test.serial('back-pressure with batches: a reader that stops holds the server at its window of rows, memory bounded; every row comes back once', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  globalThis.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const BATCHES = 2000;
  const ROWS = 64;
  let sent = 0;
  async function* reqs(): AsyncGenerator<Req> {
    yield options({ module: 'echo', window: 256 });
    const row = new Uint8Array(64);
    for (; sent < BATCHES; ) {
      const first = sent++ * ROWS;
      yield batch({ firstId: first, rows: Array.from({ length: ROWS }, () => row) });
    }
  }
  const it = c.plugins.stream(reqs())[Symbol.asyncIterator]();
  let received = 0;
  const seen = new Set<number>();
  const take = (r: StreamResponse) => {
    received++;
    const a = answer(r);
    if (a.outcomes.length === ROWS && a.outcomes.every((o) => o.length === 64)) seen.add(a.firstId);
  };
  for (; received < 10; ) take((await it.next()).value as StreamResponse);
  const { value: before, steady } = await settled(() => sent);
  t.true(steady, `no more batches were pulled while the reader paused (${before} sent)`);
  t.true(before < BATCHES / 2, `${before} of ${BATCHES} batches sent while paused`);
  t.true(host.streamRowsInFlight <= 256, `the server holds ${host.streamRowsInFlight} rows, at most its window of 256`);
  t.true(host.streamRowsInFlight > 0, 'answers the client has not read still count');
  globalThis.gc?.();
  const grown = process.memoryUsage().heapUsed - heapBefore;
  t.true(grown < 64 * 2 ** 20, `heap grew ${(grown / 2 ** 20).toFixed(0)} MiB while paused (client and server share this process)`);
  for (let r = await it.next(); !r.done; r = await it.next()) take(r.value);
  t.is(received, BATCHES);
  t.is(seen.size, BATCHES, 'every batch answered once with all its rows');
});

test('cancellation mid-batch: the rows not yet run never run, and the stream is gone from the server', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'outcomes', '1.0.0', await fixture('outcomes'), { limits: { maxPoolSize: 1, maxExecutionMs: 1500 } });
  const pool = async () => (await c.modules.describeModule({ module: 'outcomes' })).pool!;
  const abort = new AbortController();
  const streaming = collect(c.plugins.stream(from([options({ module: 'outcomes' }), batch({ firstId: 1, rows: rows('l', 'v', 'v', 'v', 'v') })]), { signal: abort.signal }));
  // the first row loops: its worker is in row 0 and has been for a while (a row cancelled before it starts would not run)
  t.true(await waitFor(() => host.manager.workers.some((w) => w.stalled && w.runningRow === 0), 10_000, 10), 'the first row loops');
  t.is(host.streamRowsInFlight, 5);
  abort.abort();
  t.is(ConnectError.from(await t.throwsAsync(streaming)).code, Code.Canceled);
  // what the server did: the stream is gone, the rows behind the loop were let go, and once
  // the loop hit its limit each row was counted once: 1 timeout, 4 cancelled
  t.true(await waitFor(() => host.openStreams === 0, 10_000, 10), 'the server closed the stream');
  t.true(await waitFor(async () => (await pool()).waiters === 0, 10_000, 10), 'no row waits for a controller');
  t.true(await waitFor(async () => Object.values(await callsOf(host, 'outcomes')).reduce((a, b) => a + b, 0) === 5, 10_000, 50), 'the batch settled');
  t.deepEqual(await callsOf(host, 'outcomes'), { TIMEOUT: 1, CANCELLED: 4 }, 'none of the four quick rows ran (each would be ok)');
  t.is(Number((await pool()).droppedTimeout), 1);
});

test("a batch's results over the response cap: rows that do not fit fail RESULT_TOO_LARGE, the others are sent; too many rows to answer are refused", async (t) => {
  const SEND_CAP = 64 * 1024;
  const host = await startPlughost(t, { grpc: { maxSendMessageBytes: SEND_CAP } });
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  const row = new Uint8Array(20 * 1024).fill(65);
  const most = answerableRows(SEND_CAP, 0);
  const results = await collect(
    c.plugins.stream(
      from([
        options({ module: 'echo', ordered: true }),
        batch({ firstId: 1, rows: [row, row, row, row, enc('small')] }),
        batch({ firstId: 10, rows: Array.from({ length: most }, () => enc('y')) }),
        batch({ firstId: 20, rows: Array.from({ length: most + 1 }, () => enc('y')) }),
        item(30, { args: enc('after') }),
      ]),
    ),
  );
  const [fits, atMost, overMost, after] = results;
  const o = answer(fits!).outcomes;
  t.deepEqual(o.map((x) => (x.length === row.length ? 'row' : x)), ['row', 'row', 'row', 'RESULT_TOO_LARGE/RESULT_TOO_LARGE', 'small'], 'the fourth 20 KiB result does not fit beside three; the small one after it does');
  t.regex((fits!.batch!.outcomes[3]!.result.value as { message: string }).message, /^not committed: the batch's results together are over grpc.maxSendMessageBytes/);
  t.is(answer(atMost!).outcomes.length, most);
  t.regex(answer(overMost!).failure ?? '', new RegExp(`INVALID_ARGUMENT/INVALID_ARGUMENT: .*the outcomes of ${most + 1} rows may not fit in one response; at most ${most}`));
  t.is(describe(after!.outcome), 'after');
});
