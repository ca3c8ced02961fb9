// Batches of rows through the runtime library, no gRPC: one outcome per row in row order,
// each row its own call (KV transaction, time limit), a failing row never failing the
// others, and the rows after a trap or a timeout going on on a fresh controller.
import test from 'ava';
import { fixture } from './fixtures/build.js';
import { lmdbStore } from './helpers/kv.js';
import { ctx, manager, readU32 } from './helpers/runtime.js';
import type { RowOutcome } from '../src/runtime/runtime.js';

const enc = (s: string) => new TextEncoder().encode(s);
const rowsOf = (...s: string[]) => s.map(enc);

/** A row's outcome as one comparable string. */
function show(o: RowOutcome | undefined): string {
  if (!o) return 'MISSING';
  if (o.ok) return o.value.byteLength === 4 && !/^[a-z]{4}$/.test(Buffer.from(o.value).toString()) ? `n=${readU32(o.value)}` : Buffer.from(o.value).toString();
  return 'guestError' in o ? `err: ${o.guestError}` : o.failure.code;
}

async function rowsModule(t: Parameters<typeof manager>[0], options: Parameters<typeof manager>[1] = {}) {
  const store = lmdbStore(t);
  const m = await manager(t, { store, ...options });
  const rt = await m.load(await fixture('rows'));
  return { m, rt, store };
}

test('every row gets exactly one outcome, in row order, across values, guest errors, a trap and a timeout; each row commits on its own', async (t) => {
  const { rt, m } = await rowsModule(t, { limits: { maxExecutionMs: 500 } });
  const c = ctx({ moduleName: 'rows' });
  const out = await rt.invokeBatch(c, undefined, rowsOf('a', 'incr', 'incr', 'err', 'trap', 'incr', 'b', 'loop', 'incr', 'c'));
  t.deepEqual(out.map(show), ['a', 'n=1', 'n=2', 'err: row said err', 'TRAP', 'n=3', 'b', 'TIMEOUT', 'n=4', 'c']);
  // the err row and the trap row wrote nothing: the next increment reads 4
  const [after] = await rt.invokeBatch(c, undefined, rowsOf('incr'));
  t.is(show(after), 'n=5');
  t.like(rt.stats().dropped, { trap: 1, timeout: 1 });
  t.is(m.stats().runtimes, 1);
});

test('a large batch is split across workers, and its rows come back in order', async (t) => {
  const m = await manager(t, { workers: 2 });
  const echo = await m.load(await fixture('echo'));
  const rows = Array.from({ length: 2000 }, (_, i) => enc(`row ${i}`));
  const out = await echo.invokeBatch(ctx({ kvAccess: 'none' }), undefined, rows);
  t.is(out.length, rows.length);
  t.true(out.every((o, i) => show(o) === `row ${i}`));
  // two parts ran at once, each on its own controller
  t.is(echo.stats().created, 2);
});

test('an empty batch answers with no outcomes and runs nothing', async (t) => {
  const m = await manager(t);
  const echo = await m.load(await fixture('echo'));
  t.deepEqual(await echo.invokeBatch(ctx(), undefined, []), []);
  t.is(echo.stats().created, 0);
});

test('two writing batches on one scope take turns row by row: no increment is lost or repeated', async (t) => {
  const { rt } = await rowsModule(t);
  const c = ctx({ moduleName: 'rows' });
  const [a, b] = await Promise.all([rt.invokeBatch(c, undefined, rowsOf(...Array(50).fill('incr'))), rt.invokeBatch(c, undefined, rowsOf(...Array(50).fill('incr')))]);
  const values = [...a!, ...b!].map(show).sort((x, y) => Number(x.slice(2)) - Number(y.slice(2)));
  t.deepEqual(values, Array.from({ length: 100 }, (_, i) => `n=${i + 1}`));
});

test('rows not started when the caller cancels get CANCELLED; rows already done keep their outcome and their writes', async (t) => {
  const { rt } = await rowsModule(t, { limits: { maxExecutionMs: 4000 } });
  const c = ctx({ moduleName: 'rows' });
  const abort = new AbortController();
  const running = rt.invokeBatch({ ...c, signal: abort.signal }, undefined, rowsOf('incr', 'loop', 'incr', 'incr'));
  // cancelled while the loop row runs (it started within a second, even on a busy machine)
  setTimeout(() => abort.abort(), 1000);
  const out = await running;
  t.deepEqual(out.map(show), ['n=1', 'TIMEOUT', 'CANCELLED', 'CANCELLED']);
  const [next] = await rt.invokeBatch(c, undefined, rowsOf('incr'));
  t.is(show(next), 'n=2');
});

test('rows still to run when the deadline passes fail with TIMEOUT, without running', async (t) => {
  const { rt } = await rowsModule(t, { limits: { maxExecutionMs: 60_000 } });
  const c = ctx({ moduleName: 'rows' });
  const out = await rt.invokeBatch({ ...c, deadline: Date.now() + 1500 }, undefined, rowsOf('incr', 'loop', 'incr'));
  t.deepEqual(out.map(show), ['n=1', 'TIMEOUT', 'TIMEOUT']);
  const [next] = await rt.invokeBatch(c, undefined, rowsOf('incr'));
  t.is(show(next), 'n=2');
});

test('rows whose results would take the batch past the response cap fail with RESULT_TOO_LARGE and commit nothing', async (t) => {
  const { rt } = await rowsModule(t);
  const c = ctx({ moduleName: 'rows' });
  // each incr answers 4 bytes, counted with a row's envelope (48): two fit in 110 bytes, not three
  const out = await rt.invokeBatch({ ...c, maxResultBytes: 110 }, undefined, rowsOf('incr', 'incr', 'incr'));
  t.deepEqual(out.map(show), ['n=1', 'n=2', 'RESULT_TOO_LARGE']);
  const [next] = await rt.invokeBatch(c, undefined, rowsOf('incr'));
  t.is(show(next), 'n=3');
});

test('a writing row refused for the response cap is not read through by the rows after it: they run again without its writes', async (t) => {
  const store = lmdbStore(t);
  const m = await manager(t, { store });
  const kv = await m.load(await fixture('kv'));
  const c = ctx({ moduleName: 'kv' });
  // `big` increments the counter, then answers its args: the middle row's answer does not fit
  const out = await kv.invokeBatch({ ...c, maxResultBytes: 1000 }, 'big', [enc('a'), new Uint8Array(2000), enc('b')]);
  t.deepEqual(out.map(show), ['a', 'RESULT_TOO_LARGE', 'b']);
  // two increments were made, not three: the third row did not build on the refused one
  const [n] = await kv.invokeBatch(c, undefined, [new Uint8Array()]);
  t.is(show(n), 'n=3');
});

test('a module whose controllers cannot start fails every row with INIT_FAILED, trying once', async (t) => {
  const m = await manager(t);
  const rt = await m.load(await fixture('failing-init'));
  const out = await rt.invokeBatch(ctx(), undefined, rowsOf('a', 'b', 'c'));
  t.deepEqual(out.map(show), ['INIT_FAILED', 'INIT_FAILED', 'INIT_FAILED']);
  t.is(rt.stats().dropped.init, 1);
});

test("cancelling one batch leaves alone the batch running ahead of it on the same worker", async (t) => {
  const m = await manager(t, { workers: 1 });
  const echo = await m.load(await fixture('echo'));
  const c = ctx({ kvAccess: 'none' });
  const rows = Array.from({ length: 50_000 }, (_, i) => enc(`a${i}`));
  const abort = new AbortController();
  const a = echo.invokeBatch(c, undefined, rows);
  const b = echo.invokeBatch({ ...c, signal: abort.signal }, undefined, rowsOf('b1', 'b2'));
  setImmediate(() => abort.abort());
  const [outA, outB] = await Promise.all([a, b]);
  t.true(outA.every((o, i) => o.ok && Buffer.from(o.value).toString() === `a${i}`), 'every row of the batch ahead answered');
  t.deepEqual(outB.map(show), ['CANCELLED', 'CANCELLED']);
});

test('an invoke-batch entry runs at most batchEntryMaxMs, however many rows it has; its rows then run one by one', async (t) => {
  const m = await manager(t, { limits: { maxExecutionMs: 1000 }, batchEntryMaxMs: 1000 });
  const echo = await m.load(await fixture('batch-echo'));
  const rows = rowsOf('a', 'spin', 'b', 'c', 'd', 'e', 'f', 'g');
  const t0 = performance.now();
  const out = await echo.invokeBatch(ctx({ kvAccess: 'none' }), undefined, rows);
  const seconds = (performance.now() - t0) / 1000;
  t.deepEqual(out.map(show), ['a', 'TIMEOUT', 'b', 'c', 'd', 'e', 'f', 'g']);
  // 1 s for the entry, 1 s for the spinning row alone; without the cap the entry alone gets 8 s
  t.true(seconds < 7, `took ${seconds.toFixed(1)} s`);
  t.is(echo.stats().dropped.timeout, 2);
});
