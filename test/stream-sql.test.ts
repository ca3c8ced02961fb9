// A guest's `sql` answered by the engine over the Stream it opened (StreamOptions.serve_sql):
// a real server, the sql fixture (it asks sql("ask", args) and returns what it got) and a real
// client playing the engine. Host calls go out on the response stream, answers come back on
// the request stream; every way an engine can misbehave gets a clear outcome and nothing waits.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import type { HostAnswerRefused, HostCall, StreamResponse } from '../gen/plughost/v1/plugin_pb.js';
import { ENGINE_CLOSED } from '../src/service/stream-host-calls.js';
import type { Plughost } from '../src/service/plughost.js';
import type { PlughostConfigInput } from '../src/service/config.js';
import { clients, push, pushFixture, startPlughost, type Clients } from './helpers/service.js';
import { fixture } from './fixtures/build.js';
import { Feed, answer, batch, describe, item, options, type Req } from './helpers/stream.js';
import { waitFor } from './helpers/wait.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

async function setup(t: ExecutionContext, config: PlughostConfigInput = {}, limits?: Record<string, number>): Promise<{ host: Plughost; c: Clients }> {
  const host = await startPlughost(t, config);
  const c = clients(t, host.address, host.createdAdminToken);
  if (limits) await push(c, 'sql', '1.0.0', await fixture('sql'), { limits });
  else await pushFixture(c, 'sql');
  return { host, c };
}

interface Engine {
  /** Every response, in the order it came. */
  responses: StreamResponse[];
  hostCalls: HostCall[];
  refused: HostAnswerRefused[];
  /** Item and batch answers, by id (a batch by its first id). */
  answers: Map<bigint, StreamResponse>;
}

/**
 * Plays the engine: sends `first`, shows each host call and refusal to `on` (which may answer
 * through the feed), and ends its side once `answers` item or batch answers have come (or
 * when `on` ends the feed itself).
 */
async function engine(
  c: Clients,
  first: Req[],
  answers: number,
  on: { hostCall?(h: HostCall, feed: Feed, seen: Engine): void; refused?(r: HostAnswerRefused, feed: Feed, seen: Engine): void; answer?(r: StreamResponse, feed: Feed, seen: Engine): void } = {},
  signal?: AbortSignal,
): Promise<Engine> {
  const feed = new Feed();
  feed.send(...first);
  const seen: Engine = { responses: [], hostCalls: [], refused: [], answers: new Map() };
  for await (const r of c.plugins.stream(feed, { signal })) {
    seen.responses.push(r);
    if (r.hostCall) {
      seen.hostCalls.push(r.hostCall);
      on.hostCall?.(r.hostCall, feed, seen);
    } else if (r.hostAnswerRefused) {
      seen.refused.push(r.hostAnswerRefused);
      on.refused?.(r.hostAnswerRefused, feed, seen);
    } else {
      seen.answers.set(r.id, r);
      on.answer?.(r, feed, seen);
      if (seen.answers.size === answers) feed.end();
    }
  }
  return seen;
}

const outcomeOf = (seen: Engine, id: number): string => describe(seen.answers.get(BigInt(id))?.outcome);

async function scrape(host: Plughost): Promise<string> {
  const res = await fetch(`http://${host.metricsServer!.address}/metrics`);
  return res.text();
}
const sample = (text: string, series: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
};

test('each guest sql becomes a host call naming its item, before the item\'s outcome; the engine\'s bytes or error string is what sql returns', async (t) => {
  const { c } = await setup(t);
  const N = 20;
  const seen = await engine(c, [options({ module: 'sql', serveSql: true, window: 8 }), ...Array.from({ length: N }, (_, i) => item(i + 1, { args: enc(`k${i + 1}`) }))], N, {
    hostCall: (h, feed) => feed.send(answer(h.hostCallId, Number(h.itemId) % 5 === 0 ? { error: `no row for ${dec(h.vars)}` } : { ok: enc(`row of ${dec(h.vars)}`) })),
  });
  t.is(seen.hostCalls.length, N, 'one host call per item');
  t.is(new Set(seen.hostCalls.map((h) => h.hostCallId)).size, N, 'host-call ids are unique on the stream');
  t.is(seen.refused.length, 0);
  for (let id = 1; id <= N; id++) {
    const h = seen.hostCalls.find((x) => x.itemId === BigInt(id));
    t.truthy(h, `item ${id} has its host call`);
    t.is(h!.query, 'ask');
    t.is(dec(h!.vars), `k${id}`, 'the vars are the guest\'s bytes');
    t.true(h!.timeoutMs > 0 && h!.timeoutMs <= 5000, `timeout_ms ${h!.timeoutMs} is within hostCallTimeoutMs`);
    const hostCallAt = seen.responses.findIndex((r) => r.hostCall === h);
    const outcomeAt = seen.responses.findIndex((r) => r.outcome && r.id === BigInt(id));
    t.true(hostCallAt < outcomeAt, `item ${id}: the host call comes before the outcome`);
    t.is(outcomeOf(seen, id), id % 5 === 0 ? `guest:no row for k${id}` : `row of k${id}`);
  }
});

test('several host calls are outstanding on one stream at once, answered in any order; one item may ask more than once', async (t) => {
  // a guest waiting for its answer holds its worker: four workers, four host calls waiting at once
  const { c } = await setup(t, { workers: 4, hostCallTimeoutMs: 30_000 });
  t.timeout(90_000);
  const N = 16;
  let most = 0;
  const held: HostCall[] = [];
  const seen = await engine(c, [options({ module: 'sql', serveSql: true, window: N }), ...Array.from({ length: N }, (_, i) => item(i + 1, { args: enc(`v${i + 1}`) }))], N, {
    hostCall: (h, feed, s) => {
      held.push(h);
      most = Math.max(most, held.length);
      // hold answers until four wait at once (or every item asked), then answer them last first
      if (held.length === 4 || s.hostCalls.length === N) for (const x of held.splice(0).reverse()) feed.send(answer(x.hostCallId, { ok: enc(`a${dec(x.vars)}`) }));
    },
  });
  t.is(most, 4, 'four host calls waited at once');
  for (let id = 1; id <= N; id++) t.is(outcomeOf(seen, id), `av${id}`, `item ${id} got its own answer`);

  // "twice" asks twice in one call: two host calls, two ids, both naming the item
  const twice = await engine(c, [options({ module: 'sql', function: 'twice', serveSql: true }), item(7, { args: enc('x') })], 1, {
    hostCall: (h, feed, s) => feed.send(answer(h.hostCallId, { ok: enc(`<${s.hostCalls.length}>`) })),
  });
  t.deepEqual(twice.hostCalls.map((h) => Number(h.itemId)), [7, 7]);
  t.not(twice.hostCalls[0]!.hostCallId, twice.hostCalls[1]!.hostCallId);
  t.is(outcomeOf(twice, 7), '<1><2>', 'each sql returned its own answer, in order');
});

test('an engine that never answers, answers late, twice, or names an unknown id: the guest gets err after hostCallTimeoutMs, extra answers are refused in-band, the stream goes on; metrics count each', async (t) => {
  // long enough for the answers that do come to make it on a busy machine
  const { host, c } = await setup(t, { hostCallTimeoutMs: 2000 });
  const before = await scrape(host);
  const seen = await engine(c, [options({ module: 'sql', serveSql: true, window: 1 }), item(1, { args: enc('ignored') }), item(2, { args: enc('twice') }), item(3, { args: enc('fine') })], 3, {
    hostCall: (h, feed) => {
      // item 1's host call is never answered (until after its outcome)
      if (h.itemId === 2n) feed.send(answer(h.hostCallId, { ok: enc('first') }), answer(h.hostCallId, { ok: enc('second') }), answer(999_999, { ok: enc('?') }), answer(h.hostCallId, {}));
      if (h.itemId === 3n) feed.send(answer(h.hostCallId, { ok: enc('ok') }));
    },
    answer: (r, feed, s) => {
      // the late answer to item 1's host call, once its outcome is in
      if (r.id === 1n) feed.send(answer(s.hostCalls[0]!.hostCallId, { ok: enc('late') }));
    },
  });
  t.regex(outcomeOf(seen, 1), /^guest:sql got no answer from the engine within 2000 ms$/);
  t.is(outcomeOf(seen, 2), 'first', 'the first answer stands');
  t.is(outcomeOf(seen, 3), 'ok', 'the stream goes on');
  const late = seen.hostCalls[0]!.hostCallId;
  const second = seen.hostCalls[1]!.hostCallId;
  const refusedFor = (id: bigint) => seen.refused.filter((r) => r.hostCallId === id).map((r) => r.message);
  t.deepEqual(refusedFor(late), [`answer to host call ${late} refused: it was answered already, or its guest stopped waiting (timeout, or its call ended)`]);
  t.deepEqual(refusedFor(999_999n), ['answer to host call 999999 refused: no host call with this id was sent on this stream']);
  t.is(refusedFor(second).length, 2, 'the duplicate is refused, and so is the answer with no result that came after it');
  t.is(seen.refused.length, 4, 'the late answer, the duplicate, the unknown id and the empty answer (its host call was answered already)');
  t.true(seen.hostCalls[0]!.timeoutMs <= 2000);

  const after = await scrape(host);
  const delta = (outcome: string) => sample(after, `plughost_host_calls_total{outcome="${outcome}"}`) - sample(before, `plughost_host_calls_total{outcome="${outcome}"}`);
  t.is(delta('answered'), 2);
  t.is(delta('timeout'), 1);
  t.is(delta('refused'), 4);
  t.is(sample(after, 'plughost_host_call_seconds_count') - sample(before, 'plughost_host_call_seconds_count'), 2, 'answers are timed');
});

test('an answer with neither ok nor error is refused and the host call still waits for a real one', async (t) => {
  const { c } = await setup(t);
  const seen = await engine(c, [options({ module: 'sql', serveSql: true }), item(1, { args: enc('x') })], 1, {
    hostCall: (h, feed) => feed.send(answer(h.hostCallId, {})),
    refused: (r, feed) => feed.send(answer(r.hostCallId, { error: 'now a real one' })),
  });
  t.is(seen.refused.length, 1);
  t.regex(seen.refused[0]!.message, /has neither ok nor error \(the host call still waits\)/);
  t.is(outcomeOf(seen, 1), 'guest:now a real one');
});

test('the call\'s own time limit bounds the wait: the host call says so, and the next item runs on the freed worker', async (t) => {
  const { c } = await setup(t, { hostCallTimeoutMs: 30_000 }, { maxExecutionMs: 3000 });
  const t0 = Date.now();
  // item 1 warms a controller; item 2 is never answered; item 3 comes after it
  const seen = await engine(c, [options({ module: 'sql', serveSql: true, window: 1 }), item(1, { args: enc('warm') }), item(2, { args: enc('never') }), item(3, { args: enc('soon') })], 3, {
    hostCall: (h, feed) => {
      if (h.itemId !== 2n) feed.send(answer(h.hostCallId, { ok: enc('answered') }));
    },
  });
  t.true(Date.now() - t0 < 25_000, 'the guest did not wait for hostCallTimeoutMs');
  const asked = seen.hostCalls.find((h) => h.itemId === 2n);
  // on a busy machine the call may run out of time before its guest asks: then it has no host call
  if (asked) t.true(asked.timeoutMs <= 3000, `timeout_ms ${asked.timeoutMs} is within the call's 3000 ms`);
  t.regex(outcomeOf(seen, 2), /^guest:sql got no answer from the engine within \d+ ms$|^TIMEOUT\/TIMEOUT$/);
  t.is(outcomeOf(seen, 3), 'answered');
});

test('an item\'s own timeout bounds the wait too', async (t) => {
  const { c } = await setup(t, { hostCallTimeoutMs: 30_000 });
  const t0 = Date.now();
  // item 1 is answered (and warms a controller); item 2 is not, and has 1 s of its own
  const seen = await engine(c, [options({ module: 'sql', serveSql: true, window: 1 }), item(1, { args: enc('warm') }), item(2, { args: enc('never'), timeoutMs: 1000 })], 2, {
    hostCall: (h, feed) => {
      if (h.itemId === 1n) feed.send(answer(h.hostCallId, { ok: enc('warm') }));
    },
  });
  t.true(Date.now() - t0 < 20_000, 'the guest did not wait for hostCallTimeoutMs');
  const asked = seen.hostCalls.find((h) => h.itemId === 2n);
  // on a busy machine the item may run out of time before its guest asks: then it has no host call
  if (asked) t.true(asked.timeoutMs <= 1000, `timeout_ms ${asked.timeoutMs} is within the item's 1000 ms`);
  // the sql err comes when the item's time is up: the guest's err, or TIMEOUT if the limit wins the race
  t.regex(outcomeOf(seen, 2), /^guest:sql got no answer from the engine within \d+ ms$|^TIMEOUT\/TIMEOUT$/);
});

test('an engine that ends its side mid-call: the waiting sql and every later one get err at once, and every item still gets its outcome', async (t) => {
  const { host, c } = await setup(t, { hostCallTimeoutMs: 30_000 });
  const before = await scrape(host);
  const t0 = Date.now();
  const seen = await engine(c, [options({ module: 'sql', serveSql: true, window: 1 }), item(1, { args: enc('a') }), item(2, { args: enc('b') }), item(3, { args: enc('c') })], 3, {
    // the first host call is not answered: the engine ends its writes instead
    hostCall: (_h, feed) => feed.end(),
  });
  t.true(Date.now() - t0 < 20_000, 'nobody waited for hostCallTimeoutMs');
  for (const id of [1, 2, 3]) t.is(outcomeOf(seen, id), `guest:${ENGINE_CLOSED}`, `item ${id}`);
  t.is(seen.hostCalls.length, 1, 'no host call is sent once the engine cannot answer');
  const after = await scrape(host);
  t.is(sample(after, 'plughost_host_calls_total{outcome="engine_closed"}') - sample(before, 'plughost_host_calls_total{outcome="engine_closed"}'), 3);
  t.is(host.openStreams, 0);
});

test('an engine that cancels mid-call: the stream ends, the waiting guest is let go, and the server serves the next stream', async (t) => {
  const { host, c } = await setup(t, { workers: 1, hostCallTimeoutMs: 30_000 });
  const abort = new AbortController();
  const cancelled = engine(c, [options({ module: 'sql', serveSql: true }), item(1, { args: enc('a') })], 1, { hostCall: () => abort.abort() }, abort.signal);
  await t.throwsAsync(cancelled);
  t.true(await waitFor(() => host.openStreams === 0, 10_000), 'the stream is gone');
  // one worker: the next call runs only once the guest that waited has been let go
  const t0 = Date.now();
  const next = await engine(c, [options({ module: 'sql', serveSql: true }), item(2, { args: enc('b') })], 1, { hostCall: (h, feed) => feed.send(answer(h.hostCallId, { ok: enc('fresh') })) });
  t.is(outcomeOf(next, 2), 'fresh');
  t.true(Date.now() - t0 < 20_000, 'the worker was not held for hostCallTimeoutMs');
});

test('where no engine serves sql (Invoke, a stream without serve_sql) the guest gets the clear err, and an answer there is refused', async (t) => {
  const { c } = await setup(t);
  const NOT_AVAILABLE = 'sql is not available: only an engine that opened a Stream serving queries (StreamOptions.serve_sql) answers sql; Invoke and other streams do not';
  const r = await c.plugins.invoke({ module: 'sql', args: enc('x') });
  t.deepEqual(r.result, { case: 'guestError', value: NOT_AVAILABLE });
  const seen = await engine(c, [options({ module: 'sql' }), answer(1, { ok: enc('unasked') }), item(1, { args: enc('x') })], 1);
  t.is(outcomeOf(seen, 1), `guest:${NOT_AVAILABLE}`);
  t.is(seen.hostCalls.length, 0);
  t.deepEqual(seen.refused.map((x) => x.message), ['answer to host call 1 refused: this stream does not serve sql (its first message must be options with serve_sql set)']);
});

test('a batch whose rows call sql: each host call names its row\'s id (first_id + row, or ids[row]), also when the batch is split across workers', async (t) => {
  const { c } = await setup(t);
  const rows = (n: number) => Array.from({ length: n }, (_, i) => enc(`r${i}`));
  const byVars = new Map<string, bigint>();
  const seen = await engine(
    c,
    [
      options({ module: 'sql', serveSql: true, window: 1024 }),
      batch({ firstId: 100, rows: rows(5) }),
      batch({ ids: [7, 3, 9], rows: rows(3), function: 'twice' }),
    ],
    2,
    { hostCall: (h, feed) => feed.send(answer(h.hostCallId, { ok: enc(`${h.itemId}:`) })) },
  );
  t.deepEqual(seen.answers.get(100n)!.batch!.outcomes.map(describe), ['100:', '101:', '102:', '103:', '104:']);
  t.deepEqual(seen.answers.get(0n)!.batch!.outcomes.map(describe), ['7:7:', '3:3:', '9:9:'], 'each row\'s two host calls name its id');

  // 256 rows that write nothing go to both workers in two parts, each counting its rows from 0
  const split = await engine(c, [options({ module: 'sql', serveSql: true, window: 1024 }), batch({ firstId: 5000, rows: rows(256) })], 1, {
    hostCall: (h, feed) => {
      byVars.set(dec(h.vars), h.itemId);
      feed.send(answer(h.hostCallId, { ok: h.vars }));
    },
  });
  t.is(split.answers.get(5000n)!.batch!.outcomes.length, 256);
  let wrong = 0;
  for (let i = 0; i < 256; i++) if (byVars.get(`r${i}`) !== 5000n + BigInt(i)) wrong++;
  t.is(wrong, 0, 'every row\'s host call names first_id + its row');
  t.is(split.answers.get(5000n)!.batch!.outcomes.filter((o, i) => describe(o) !== `r${i}`).length, 0);
});

test('a batch row whose host call times out fails alone; its neighbours get their answers', async (t) => {
  const { c } = await setup(t, { hostCallTimeoutMs: 2000 });
  const seen = await engine(c, [options({ module: 'sql', serveSql: true }), batch({ firstId: 1, rows: [enc('a'), enc('skip'), enc('c')] })], 1, {
    hostCall: (h, feed) => {
      if (dec(h.vars) !== 'skip') feed.send(answer(h.hostCallId, { ok: enc(dec(h.vars).toUpperCase()) }));
    },
  });
  const outcomes = seen.answers.get(1n)!.batch!.outcomes;
  t.is(describe(outcomes[0]), 'A');
  t.regex(describe(outcomes[1]), /^guest:sql got no answer from the engine within \d+ ms$/);
  t.is(describe(outcomes[2]), 'C');
  t.is(outcomes[1]!.result.case, 'guestError', 'a guest err, not a failure: the guest decided what to make of it');
});

test('a client that stops reading while a host call is on its way: the guest still stops waiting at hostCallTimeoutMs, and the stream goes on once it reads again', async (t) => {
  const { host, c } = await setup(t, { hostCallTimeoutMs: 2000 });
  const feed = new Feed();
  feed.send(options({ module: 'sql', serveSql: true, window: 1 }), item(1, { args: enc('small') }));
  const responses = c.plugins.stream(feed)[Symbol.asyncIterator]();
  const next = async () => (await responses.next()).value as StreamResponse;
  const first = await next();
  feed.send(answer(first.hostCall!.hostCallId, { ok: enc('answered') }));
  t.is(describe((await next()).outcome), 'answered');
  // item 2's host call carries 2 MiB of vars, more than HTTP/2's flow control lets reach a client that does not read
  const big = new Uint8Array(2 << 20).fill(0x61);
  feed.send(item(2, { args: big }));
  const timeouts = async () => sample(await scrape(host), 'plughost_host_calls_total{outcome="timeout"}');
  t.true(await waitFor(async () => (await timeouts()) === 1, 30_000, 50), 'the guest stopped waiting while its host call could not reach the client');
  const stale = await next();
  t.is(stale.hostCall?.vars.length, big.length, 'the host call arrives whole once the client reads');
  feed.send(answer(stale.hostCall!.hostCallId, { ok: enc('too late') }));
  t.regex(describe((await next()).outcome), /^guest:sql got no answer from the engine within \d+ ms$/);
  t.regex((await next()).hostAnswerRefused?.message ?? '', /answered already, or its guest stopped waiting/);
  feed.send(item(3, { args: enc('again') }));
  const third = await next();
  feed.send(answer(third.hostCall!.hostCallId, { ok: enc('fine') }));
  t.is(describe((await next()).outcome), 'fine');
  feed.end();
  t.true((await responses.next()).done, 'the stream ends');
});

test('server shutdown: an item whose guest waits on the engine still gets its answer, then the stream ends UNAVAILABLE', async (t) => {
  const { host, c } = await setup(t, { hostCallTimeoutMs: 30_000, shutdownGraceMs: 20_000 });
  let closing: Promise<void> | undefined;
  const err = await t.throwsAsync(
    engine(c, [options({ module: 'sql', serveSql: true }), item(1, { args: enc('x') })], 1, {
      hostCall: (h, feed) => {
        // the server starts shutting down while the guest waits; the answer comes after
        closing = host.close();
        setImmediate(() => feed.send(answer(h.hostCallId, { ok: enc('answered during shutdown') })));
      },
      answer: (r) => t.is(describe(r.outcome), 'answered during shutdown'),
    }),
  );
  t.is(ConnectError.from(err).code, Code.Unavailable);
  t.plan(3);
  await closing;
});

test('a guest\'s invoke-batch entry runs many rows in one call: its host calls name the first row of the entry', async (t) => {
  const { c } = await setup(t);
  await pushFixture(c, 'sql-entry');
  const seen = await engine(c, [options({ module: 'sql-entry', serveSql: true }), batch({ firstId: 40, rows: [enc('a'), enc('b'), enc('c')] })], 1, {
    hostCall: (h, feed) => feed.send(answer(h.hostCallId, { ok: enc(`${dec(h.vars)}@${h.itemId}`) })),
  });
  t.deepEqual(seen.answers.get(40n)!.batch!.outcomes.map(describe), ['a@40', 'b@40', 'c@40']);
});

test("a call made with run asks the same engine: its sql names the item whose call made it", async (t) => {
  const { c } = await setup(t);
  await pushFixture(c, 'run', '1.0.0', 'front');
  const seen = await engine(c, [options({ module: 'front', function: 'relay', serveSql: true }), item(7, { args: enc('sql||nested') })], 1, {
    hostCall: (h, feed) => feed.send(answer(h.hostCallId, { ok: enc(`answer to ${dec(h.vars)} for item ${h.itemId}`) })),
  });
  t.is(seen.hostCalls.length, 1);
  t.is(seen.hostCalls[0]!.itemId, 7n);
  t.is(outcomeOf(seen, 7), 'answer to nested for item 7');
});
