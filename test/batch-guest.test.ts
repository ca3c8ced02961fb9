// The batch guests (test/fixtures/batch-*.wat, hash-batch.wat): their `invoke-batch` export
// called directly through jco in this thread, and their rows through Runtime.invokeBatch
// (real workers). The Runtime may run a batch through per-row `invoke` or through
// `invoke-batch`; what these tests assert of it holds either way.
import test from 'ava';
import { fixture } from './fixtures/build.js';
import { inThreadGuest, type BatchRow } from './helpers/in-thread.js';
import { ctx, manager } from './helpers/runtime.js';
import type { RowOutcome } from '../src/runtime/runtime.js';

const enc = (s: string) => new TextEncoder().encode(s);
const okRow = (v: Uint8Array): BatchRow => ({ tag: 'ok', val: v });
const errRow = (message: string): BatchRow => ({ tag: 'err', val: message });
/** What the hash guests answer: 32-bit FNV-1a, u32 little-endian. */
const fnv1a = (b: Uint8Array) => new Uint8Array(new Uint32Array([b.reduce((h, x) => Math.imul(h ^ x, 0x01000193) >>> 0, 0x811c9dc5)]).buffer);
/** Rows of every length 0..n-1, bytes varying by row, never one of batch-echo's words. */
const rowsUpTo = (n: number) => Array.from({ length: n }, (_, i) => new Uint8Array(i).map((_, j) => (i * 7 + j) % 251));

/** An outcome as plain data, to compare with deepEqual. */
function shape(o: RowOutcome) {
  if (o.ok) return { value: [...o.value] };
  return 'guestError' in o ? { guestError: o.guestError } : { failure: o.failure.code };
}

test('batch-echo: invoke-batch echoes each row in order in one entry, "err" rows err, any other function errs on every row', async (t) => {
  const guest = await inThreadGuest(await fixture('batch-echo'));
  const rows = [enc('a'), new Uint8Array(), enc('err'), enc('xyz'), new Uint8Array(256).map((_, i) => i)];
  const expected = [okRow(rows[0]!), okRow(rows[1]!), errRow('row said err'), okRow(rows[3]!), okRow(rows[4]!)];
  t.deepEqual(guest.invokeBatch(undefined, rows), expected);
  t.deepEqual(guest.invokeBatch('echo', rows), expected, 'the named function is the default one');
  t.deepEqual(guest.invokeBatch('nope', [enc('a'), enc('b')]), [errRow('no such function'), errRow('no such function')]);
  t.deepEqual(guest.invokeBatch(undefined, []), []);
  const many = rowsUpTo(1000);
  t.deepEqual(guest.invokeBatch('echo', many), many.map(okRow), 'a thousand rows, in order');
  // per-row invoke answers each row as its batch did
  t.deepEqual([...guest.invoke(undefined, enc('xyz'))], [...enc('xyz')]);
  t.throws(() => guest.invoke(undefined, enc('err')), { any: true, is: 'row said err' }, 'jco throws the err string itself');
  t.deepEqual(guest.listFunctions?.(), [undefined, 'echo']);
});

test('batch-echo: a "trap" row traps the whole entry, and the instance takes no call after it', async (t) => {
  const guest = await inThreadGuest(await fixture('batch-echo'));
  t.throws(() => guest.invokeBatch(undefined, [enc('a'), enc('trap'), enc('b')]), { instanceOf: WebAssembly.RuntimeError, message: /unreachable/ });
  t.throws(() => guest.invokeBatch(undefined, [enc('a')]), undefined, 'a trapped instance is poisoned');
  t.throws(() => guest.invoke(undefined, enc('a')));
});

test('batch-count: invoke-batch answers one result more than it was given rows, even for none', async (t) => {
  const guest = await inThreadGuest(await fixture('batch-count'));
  t.deepEqual(guest.invokeBatch(undefined, [enc('a'), enc('b')]), [okRow(new Uint8Array()), okRow(new Uint8Array()), okRow(new Uint8Array())]);
  t.is(guest.invokeBatch(undefined, []).length, 1);
  t.deepEqual([...guest.invoke(undefined, enc('a'))], [...enc('a')], 'its invoke echoes');
});

test('hash and hash-batch: the same FNV-1a per call and per row of a batch', async (t) => {
  const [hash, hashBatch] = await Promise.all([inThreadGuest(await fixture('hash')), inThreadGuest(await fixture('hash-batch'))]);
  const rows = [...rowsUpTo(64), new Uint8Array(4096).map((_, i) => i * 31)];
  const expected = rows.map(fnv1a);
  t.deepEqual(hashBatch.invokeBatch(undefined, rows), expected.map(okRow));
  t.deepEqual(rows.map((r) => hash.invoke(undefined, r)), expected);
  t.deepEqual(rows.map((r) => hashBatch.invoke(undefined, r)), expected);
  t.deepEqual([...fnv1a(enc('hello'))], [0xab, 0x2c, 0x9f, 0x4f], 'FNV-1a of "hello" is 0x4f9f2cab');
});

test('Runtime.invokeBatch: one outcome per row in row order; an err row and a trap row fail alone', async (t) => {
  const m = await manager(t);
  const echo = await m.load(await fixture('batch-echo'));
  const rows = [enc('a'), enc('err'), new Uint8Array(), enc('trap'), enc('b'), ...rowsUpTo(40)];
  const outcomes = await echo.invokeBatch(ctx(), 'echo', rows);
  t.deepEqual(outcomes.map(shape), [
    { value: [...enc('a')] },
    { guestError: 'row said err' },
    { value: [] },
    { failure: 'TRAP' },
    { value: [...enc('b')] },
    ...rowsUpTo(40).map((r) => ({ value: [...r] })),
  ]);
  const hash = await m.load(await fixture('hash-batch'));
  t.deepEqual((await hash.invokeBatch(ctx(), undefined, rowsUpTo(100))).map(shape), rowsUpTo(100).map((r) => ({ value: [...fnv1a(r)] })));
});

test('Runtime.invokeBatch of batch-count: the host uses invoke-batch when exported, and a wrong result count fails every row as a trap (no row runs again alone)', async (t) => {
  const m = await manager(t);
  const count = await m.load(await fixture('batch-count'));
  const rows = [enc('a'), enc('b'), enc('c')];
  const outcomes = await count.invokeBatch(ctx(), undefined, rows);
  // per-row invoke would have echoed each row
  t.deepEqual(outcomes.map(shape), rows.map(() => ({ failure: 'TRAP' })));
  const first = outcomes[0]!;
  t.regex(!first.ok && 'failure' in first ? first.failure.message : '', /invoke-batch returned 4 results for 3 rows; it must return one per row/);
  t.is(count.stats().dropped.trap, 1);
});

test('Runtime.invokeBatch: a "spin" row runs past its time limit and fails alone with TIMEOUT', async (t) => {
  const m = await manager(t, { limits: { maxExecutionMs: 1000 } });
  const echo = await m.load(await fixture('batch-echo'));
  const outcomes = await echo.invokeBatch(ctx(), undefined, [enc('a'), enc('spin'), enc('b')]);
  t.deepEqual(outcomes.map(shape), [{ value: [...enc('a')] }, { failure: 'TIMEOUT' }, { value: [...enc('b')] }]);
});
