// The KV test suite, one for every store: each backend's test file runs it against its own
// store (LMDB in a temp dir, a throwaway PostgreSQL), so both are held to the same
// semantics, limits and messages.
import test, { type ExecutionContext } from 'ava';
import { fixture } from '../fixtures/build.js';
import { ctx, manager, none, readU32, valueOf } from './runtime.js';
import { kvSetArgs } from './kv.js';
import { DEFAULT_KV_LIMITS } from '../../src/runtime/options.js';
import { isPlughostError } from '../../src/errors.js';
import type { KvLimits, KvStore } from '../../src/kv/types.js';
import { countResult, entriesResult, entryList, keyList, keyRange, keysResult, unitResult, valuesResult } from './canonical.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const setArgs = kvSetArgs;

export interface KvBackend {
  name: string;
  /** A fresh, empty store, closed when the test ends; its scope locks wait up to 60 s (the calls' own limits bound them). */
  store(t: ExecutionContext): Promise<KvStore>;
}

export function kvSuite(backend: KvBackend): void {
  async function kvRuntime(t: Parameters<typeof manager>[0], options: Parameters<typeof manager>[1] = {}) {
    const store = await backend.store(t);
    const m = await manager(t, { store, ...options });
    return { store, m, kv: await m.load(await fixture('kv'), { name: 'kv' }) };
  }

  test.serial(`${backend.name}: every single-key operation works through a guest, and the guest reads its own writes`, async (t) => {
    const { kv } = await kvRuntime(t);
    for (const expected of [1, 2, 3]) t.is(readU32(valueOf(await kv.invoke(ctx(), undefined, none))), expected);
    t.is(readU32(valueOf(await kv.invoke(ctx(), 'twice', none))), 5, 'the second get in a call sees the first set');
    t.deepEqual([...valueOf(await kv.invoke(ctx(), 'get', enc('color')))], [0]);
    valueOf(await kv.invoke(ctx(), 'set', setArgs('color', 'teal')));
    t.is(dec(valueOf(await kv.invoke(ctx(), 'get', enc('color')))), '\u0001teal');
    t.deepEqual([...valueOf(await kv.invoke(ctx(), 'exists', enc('color')))], [1]);
    valueOf(await kv.invoke(ctx(), 'del', enc('color')));
    t.deepEqual([...valueOf(await kv.invoke(ctx(), 'exists', enc('color')))], [0]);
  });

  test.serial(`${backend.name}: a guest error, a trap and a timeout each leave the store exactly as before the call`, async (t) => {
    const { kv } = await kvRuntime(t, { limits: { maxExecutionMs: 300 } });
    t.is(readU32(valueOf(await kv.invoke(ctx(), undefined, none))), 1);
    t.deepEqual(await kv.invoke(ctx(), 'fail', none), { ok: false, guestError: 'rolled back by the guest' });
    t.true(isPlughostError(await t.throwsAsync(kv.invoke(ctx(), 'trap', none)), 'TRAP'));
    t.true(isPlughostError(await t.throwsAsync(kv.invoke(ctx(), 'hang', none)), 'TIMEOUT'));
    t.is(readU32(valueOf(await kv.invoke(ctx(), undefined, none))), 2, 'none of the three increments was committed');
  });

  test.serial(`${backend.name}: scopes are isolated across modules and tenants, whatever the keys hold`, async (t) => {
    const { kv } = await kvRuntime(t);
    const keys = ['', '/', '\u0000', 'a\u0000b', '\u0001\u0000\u00ff', 'x'.repeat(1024), 'tenant-b', 'é'];
    const writers = [ctx({ tenant: 'tenant-a' }), ctx({ tenant: 'tenant-b' }), ctx({ tenant: 'tenant-a', moduleName: 'other' })];
    for (const [i, c] of writers.entries()) for (const k of keys) valueOf(await kv.invoke(c, 'set', setArgs(k, `w${i}`)));
    for (const [i, c] of writers.entries()) {
      for (const k of keys) t.is(dec(valueOf(await kv.invoke(c, 'get', enc(k)))), `\u0001w${i}`, `writer ${i} key ${JSON.stringify(k).slice(0, 20)}`);
    }
    // versions of one module (same name) share their scope; a fresh name sees nothing
    t.deepEqual([...valueOf(await kv.invoke(ctx({ tenant: 'tenant-a', moduleName: 'fresh' }), 'exists', enc('')))], [0]);
  });

  test.serial(`${backend.name}: permissions: a read-only caller and a caller without KV get err, and nothing is written`, async (t) => {
    const { kv } = await kvRuntime(t);
    const ro = await kv.invoke(ctx({ kvAccess: 'read' }), 'set', setArgs('k', 'v'));
    t.false(ro.ok);
    t.regex((ro as { guestError: string }).guestError, /KV write denied/);
    t.deepEqual([...valueOf(await kv.invoke(ctx({ kvAccess: 'read' }), 'exists', enc('k')))], [0]);
    const denied = await kv.invoke(ctx({ kvAccess: 'none' }), 'get', enc('k'));
    t.regex((denied as { guestError: string }).guestError, /KV access denied/);
  });

  test.serial(`${backend.name}: 1,000 parallel read-modify-write calls from several workers lose no update`, async (t) => {
    // they queue for one scope's lock: a generous wait, so a busy machine slows the test but does not fail it
    t.timeout(180_000);
    const { kv } = await kvRuntime(t, { acquireTimeoutMs: 60_000 });
    await Promise.all(Array.from({ length: 1000 }, () => kv.invoke(ctx(), undefined, none)));
    const stored = valueOf(await kv.invoke(ctx(), 'get', enc('n')));
    t.is(stored[0], 1, 'present');
    t.is(readU32(stored.subarray(1)), 1000);
  });

  test.serial(`${backend.name}: limits: each at its value works, just past it fails with a message naming it, and nothing partial is written`, async (t) => {
    const store = await backend.store(t);
    const limits: KvLimits = { maxKeyBytes: 8, maxValueBytes: 4, maxEntriesPerScope: 3, maxBatchItems: 2, maxRangeEntries: 2 };
    const scope = { tenant: 't', module: 'limits' };
    const txn = () => store.begin(scope, 'write', limits);
    const b = (s: string) => Buffer.from(s);
    const fails = async (op: string, args: unknown[], name: string) => {
      const failing = txn();
      const e = await t.throwsAsync(failing.apply(op, args));
      t.regex(e!.message, new RegExp(name), `${op} names ${name}`);
      failing.rollback();
    };
    let x = txn();
    await x.apply('kvSet', ['k'.repeat(8), b('vvvv')]);
    await x.apply('kvSetBatch', [[['a', b('1')], ['b', b('2')]]]);
    await x.commit();
    await fails('kvSet', ['k'.repeat(9), b('v')], 'maxKeyBytes');
    await fails('kvSet', ['k', b('vvvvv')], 'maxValueBytes');
    await fails('kvSet', ['fourth', b('v')], 'maxEntriesPerScope');
    await fails('kvSetBatch', [[['c', b('1')], ['d', b('2')], ['e', b('3')]]], 'maxBatchItems');
    await fails('kvKeys', [{ reverse: false }], 'maxRangeEntries');
    await fails('kvDelRange', [{ reverse: false }], 'maxRangeEntries');
    // at the limits: overwriting an existing key does not add an entry; a range with limit 2 is fine
    x = txn();
    await x.apply('kvSet', ['a', b('new')]);
    t.deepEqual(await x.apply('kvKeys', [{ limit: 2, reverse: false }]), ['a', 'b']);
    await x.commit();
    const r = store.begin(scope, 'read', limits);
    t.is(await r.apply('kvCount', [{ reverse: false }]), 3n);
    const got = (await r.apply('kvGetBatch', [['a', 'c']])) as (Uint8Array | undefined)[];
    t.deepEqual(got.map((v) => v && dec(v)), ['new', undefined]);
  });

  test.serial(`${backend.name}: limits through a guest: each at its value works, just past it the import answers err naming it, and nothing is written`, async (t) => {
    const store = await backend.store(t);
    const m = await manager(t, { store });
    const kvLimits = { maxKeyBytes: 8, maxValueBytes: 4, maxEntriesPerScope: 3, maxBatchItems: 2, maxRangeEntries: 2 };
    const kv = await m.load(await fixture('kv'), { name: 'limits', limits: { kv: kvLimits } });
    const batch = await m.load(await fixture('kv-batch'), { name: 'limits-batch', limits: { kv: kvLimits } });
    const set = async (key: string, value: string) => kv.invoke(ctx(), 'set', setArgs(key, value));
    const errOf = (r: { ok: true } | { ok: false; guestError: string }) => (r.ok ? 'ok' : r.guestError);
    t.is(errOf(await set('k'.repeat(8), 'vvvv')), 'ok', 'a key of maxKeyBytes and a value of maxValueBytes');
    t.regex(errOf(await set('k'.repeat(9), 'v')), /maxKeyBytes = 8/);
    t.regex(errOf(await set('k', 'vvvvv')), /maxValueBytes = 4/);
    t.is(errOf(await set('a', '1')), 'ok');
    t.is(errOf(await set('b', '2')), 'ok', 'the scope holds maxEntriesPerScope entries');
    t.regex(errOf(await set('fourth', 'v')), /maxEntriesPerScope = 3/);
    t.is(errOf(await set('a', 'new')), 'ok', 'overwriting an existing key adds no entry');
    const written = store.begin({ tenant: ctx().tenant, module: 'limits' }, 'read', DEFAULT_KV_LIMITS);
    t.deepEqual(await written.apply('kvKeys', [{ reverse: false }]), ['a', 'b', 'k'.repeat(8)], 'nothing refused was written');

    const call = async (fn: string, args: Uint8Array) => valueOf(await batch.invoke(ctx({ tenant: 'batch' }), fn, args));
    t.deepEqual(unitResult(await call('set-batch', entryList([['a', 'A'], ['b', 'B']]))), { ok: null }, 'a batch of maxBatchItems');
    t.regex((unitResult(await call('set-batch', entryList([['c', 'C'], ['d', 'D'], ['e', 'E']]))) as { err: string }).err, /maxBatchItems = 2/);
    t.deepEqual(unitResult(await call('set-batch', entryList([['c', 'C']]))), { ok: null });
    t.deepEqual(keysResult(await call('keys', keyRange({ limit: 2 }))), { ok: ['a', 'b'] }, 'a range of maxRangeEntries');
    t.regex((keysResult(await call('keys', keyRange({}))) as { err: string }).err, /maxRangeEntries = 2/);
    t.regex((countResult(await call('del-range', keyRange({}))) as { err: string }).err, /maxRangeEntries = 2/);
    t.deepEqual(countResult(await call('count', keyRange({}))), { ok: 3 }, 'the refused del-range deleted nothing');
    t.deepEqual(valuesResult(await call('get-batch', keyList(['d', 'e']))), { ok: [null, null] }, 'the refused batch wrote nothing');
  });

  test.serial(`${backend.name}: batch and range operations: byte order, bounds, limit, reverse, read-your-writes and rollback`, async (t) => {
    const store = await backend.store(t);
    const scope = { tenant: 't', module: 'ranges' };
    const w = store.begin(scope, 'write', DEFAULT_KV_LIMITS);
    const keys = ['b', 'a', 'ab', 'c', 'é', 'z', 'a/b'];
    await w.apply('kvSetBatch', [keys.map((k) => [k, Buffer.from(k.toUpperCase())])]);
    await w.commit();
    const t2 = store.begin(scope, 'write', DEFAULT_KV_LIMITS);
    await t2.apply('kvDelBatch', [['c']]);
    await t2.apply('kvSet', ['bb', Buffer.from('BB')]);
    // reads see the transaction's own writes, merged in byte order with committed data
    t.deepEqual(await t2.apply('kvKeys', [{ reverse: false }]), ['a', 'a/b', 'ab', 'b', 'bb', 'z', 'é']);
    t.deepEqual(await t2.apply('kvKeys', [{ start: 'ab', end: 'z', reverse: false }]), ['ab', 'b', 'bb']);
    t.deepEqual(await t2.apply('kvKeys', [{ start: 'ab', end: 'z', reverse: true }]), ['bb', 'b', 'ab']);
    t.deepEqual(await t2.apply('kvKeys', [{ end: 'b', limit: 2, reverse: true }]), ['ab', 'a/b']);
    t.deepEqual((await t2.apply('kvEntries', [{ start: 'b', end: 'c', reverse: false }]) as [string, Uint8Array][]).map(([k, v]) => [k, Buffer.from(v).toString()]), [['b', 'B'], ['bb', 'BB']]);
    t.is(await t2.apply('kvCount', [{ start: 'a', end: 'b', reverse: false }]), 3n);
    // others see nothing of an uncommitted transaction
    const other = store.begin(scope, 'read', DEFAULT_KV_LIMITS);
    t.is(await other.apply('kvExists', ['bb']), false);
    t.is(await t2.apply('kvDelRange', [{ start: 'a', end: 'b', reverse: false }]), 3n);
    t.deepEqual(await t2.apply('kvKeys', [{ reverse: false }]), ['b', 'bb', 'z', 'é']);
    t2.rollback();
    t.deepEqual(await store.begin(scope, 'read', DEFAULT_KV_LIMITS).apply('kvKeys', [{ reverse: false }]), ['a', 'a/b', 'ab', 'b', 'c', 'z', 'é']);
  });

  test.serial(`${backend.name}: every batch and range operation works through a guest, and a function that is not writeable gets read-only KV`, async (t) => {
    const store = await backend.store(t);
    const m = await manager(t, { store, limits: { kv: { maxBatchItems: 8 } } });
    const g = await m.load(await fixture('kv-batch'), { name: 'kv-batch' });
    const call = async (fn: string, args: Uint8Array) => valueOf(await g.invoke(ctx(), fn, args));
    const keys = ['b', 'a', 'ab', 'c', 'é', 'z', 'a/b', ''];
    t.deepEqual(unitResult(await call('set-batch', entryList(keys.map((k) => [k, k.toUpperCase()])))), { ok: null });
    t.deepEqual(valuesResult(await call('get-batch', keyList(['a', 'missing', '', 'é']))), { ok: ['A', null, '', 'É'] });
    t.deepEqual(keysResult(await call('keys', keyRange({}))), { ok: ['', 'a', 'a/b', 'ab', 'b', 'c', 'z', 'é'] }, 'UTF-8 byte order');
    t.deepEqual(keysResult(await call('keys', keyRange({ start: 'ab', end: 'z' }))), { ok: ['ab', 'b', 'c'] }, 'start inclusive, end exclusive');
    t.deepEqual(keysResult(await call('keys', keyRange({ end: 'b', limit: 2, reverse: true }))), { ok: ['ab', 'a/b'] });
    t.deepEqual(entriesResult(await call('entries', keyRange({ start: 'b', limit: 2 }))), { ok: [['b', 'B'], ['c', 'C']] });
    t.deepEqual(countResult(await call('count', keyRange({ start: 'a', end: 'b' }))), { ok: 3 });
    t.deepEqual(countResult(await call('del-range', keyRange({ start: 'a', end: 'b' }))), { ok: 3 });
    t.deepEqual(unitResult(await call('del-batch', keyList(['c', 'never-there']))), { ok: null });
    t.deepEqual(keysResult(await call('keys', keyRange({}))), { ok: ['', 'b', 'z', 'é'] });
    // past the batch limit: err naming it, nothing written
    const nine = Array.from({ length: 9 }, (_, i): [string, string] => [`n${i}`, 'v']);
    const over = unitResult(await call('set-batch', entryList(nine)));
    t.regex((over as { err: string }).err, /maxBatchItems/);
    t.deepEqual(countResult(await call('count', keyRange({ start: 'n', end: 'o' }))), { ok: 0 });
    // peek-set is declared not writeable: its write is an err to the guest, not a trap
    const ro = unitResult(await call('peek-set', entryList([['p', 'v']])));
    t.regex((ro as { err: string }).err, /KV write denied/);
    t.deepEqual(valuesResult(await call('get-batch', keyList(['p']))), { ok: [null] });
  });
}
