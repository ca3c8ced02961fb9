// Writers of one KV scope: each holds the scope's lock only until its reply is in, and the
// next one reads through the commits still on their way into LMDB. Nothing is lost, the
// entry limit stays exact, and a commit that fails takes down the later ones that read it.
import test from 'ava';
import { fixture } from './fixtures/build.js';
import { ctx, manager, none, readU32, valueOf } from './helpers/runtime.js';
import { kvSetArgs, lmdbStore } from './helpers/kv.js';
import { scopeKeys } from '../src/kv/keys.js';

const enc = (s: string) => new TextEncoder().encode(s);

test.serial('the store keeps a scope\'s commits readable for the next writer until LMDB has them', async (t) => {
  const store = lmdbStore(t);
  const scope = { tenant: 't', module: 'm' };
  const key = (k: string) => Buffer.concat([scopeKeys(scope).prefix, Buffer.from(k)]);
  t.is(store.overlayOf(scope), undefined);
  const first = store.commit(scope, { writes: [[key('a'), enc('1')]], entryDelta: 1, baseCount: 0 });
  const second = store.commit(scope, { writes: [[key('a'), enc('2')], [key('b'), null]], entryDelta: 0, baseCount: undefined });
  t.deepEqual(store.overlayOf(scope), [[key('a'), enc('1')], [key('a'), enc('2')], [key('b'), null]], 'both, oldest first');
  t.is(store.overlayOf({ tenant: 't', module: 'other' }), undefined, 'per scope');
  await Promise.all([first.durable, second.durable]);
  t.is(store.overlayOf(scope), undefined, 'gone once LMDB has them');
});

test.serial('a commit that fails fails the later commits of its scope that may have read it; other scopes go on', async (t) => {
  const store = lmdbStore(t);
  const scope = { tenant: 't', module: 'm' };
  const other = { tenant: 't', module: 'n' };
  const key = (s: typeof scope, k: string) => Buffer.concat([scopeKeys(s).prefix, Buffer.from(k)]);
  // LMDB refuses a key this long: the commit fails in its transaction
  const bad = store.commit(scope, { writes: [[key(scope, 'x'.repeat(4000)), enc('v')]], entryDelta: 1, baseCount: undefined });
  const after = store.commit(scope, { writes: [[key(scope, 'b'), enc('v')]], entryDelta: 1, baseCount: undefined });
  const elsewhere = store.commit(other, { writes: [[key(other, 'c'), enc('v')]], entryDelta: 1, baseCount: undefined });
  await t.throwsAsync(bad.visible);
  const e = await t.throwsAsync(after.visible);
  t.regex(e!.message, /an earlier commit of this KV scope, which this call may have read, failed/);
  await t.throwsAsync(after.durable);
  await elsewhere.durable;
  t.is(store.mainReader.get(key(scope, 'b')), undefined, 'the later commit wrote nothing');
  t.deepEqual([...store.mainReader.get(key(other, 'c'))!], [...enc('v')]);
  t.is(store.overlayOf(scope), undefined);
  // the scope is usable again
  await store.commit(scope, { writes: [[key(scope, 'd'), enc('v')]], entryDelta: 1, baseCount: undefined }).durable;
  t.truthy(store.mainReader.get(key(scope, 'd')));
});

test.serial('parallel writers of one scope keep its entry limit exact while their commits are still on the way', async (t) => {
  const store = lmdbStore(t);
  const m = await manager(t, { store });
  const kv = await m.load(await fixture('kv'), { name: 'kv', limits: { kv: { maxEntriesPerScope: 40 } } });
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => kv.invoke(ctx(), 'set', kvSetArgs(`key-${i}`, 'v'))));
  const ok = results.filter((r) => r.ok).length;
  const refused = results.filter((r) => !r.ok && /maxEntriesPerScope = 40/.test(r.guestError)).length;
  t.is(ok, 40, 'exactly the limit was written');
  t.is(refused, 60, 'the rest were refused by the limit');
  // and a read-modify-write burst still loses nothing while writers read through pending commits
  await Promise.all(Array.from({ length: 300 }, () => kv.invoke(ctx({ moduleName: 'counter' }), undefined, none)));
  t.is(readU32(valueOf(await kv.invoke(ctx({ moduleName: 'counter' }), 'get', enc('n'))).subarray(1)), 300);
});
