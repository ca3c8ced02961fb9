// The v2 call path's defects, each fixed with a test: bounded close, a commit that fails,
// the first call's introspection retried when its worker is lost, bounded caches, KV read
// in the workers with writers serialized, and the durability barrier of readers.
import test from 'ava';
import { fixture } from './fixtures/build.js';
import { ctx, manager, none, readU32, valueOf } from './helpers/runtime.js';
import { kvSetArgs, lmdbStore } from './helpers/kv.js';
import { isPlughostError } from '../src/errors.js';
import { DEFAULT_KV_LIMITS } from '../src/runtime/options.js';

const enc = (s: string) => new TextEncoder().encode(s);

test.serial('close(graceMs) is bounded: a call still running past the grace fails with UNAVAILABLE and no worker is left', async (t) => {
  const m = await manager(t, { limits: { maxExecutionMs: 120_000 } });
  const faults = await m.load(await fixture('faults'));
  const echo = await m.load(await fixture('echo'));
  valueOf(await echo.invoke(ctx(), undefined, none));
  const looping = faults.invoke(ctx(), 'loop', none);
  looping.catch(() => {});
  // the loop has started on its worker once that worker is stalled
  while (!m.workers.some((w) => w.stalled)) await new Promise((r) => setTimeout(r, 5));
  await m.close(100);
  const e = await t.throwsAsync(looping);
  t.true(isPlughostError(e, 'UNAVAILABLE'), String(e));
  t.regex(e!.message, /closed before the call finished/);
  t.is(m.stats().workers, 0, 'every worker is stopped');
  t.true(isPlughostError(await t.throwsAsync(echo.invoke(ctx(), undefined, none)), 'UNAVAILABLE'), 'new calls are refused');
});

test.serial('a commit that fails fails its call with a clear error, writes nothing, and leaves the pool within maxPoolSize', async (t) => {
  const store = lmdbStore(t);
  const m = await manager(t, { store, limits: { maxPoolSize: 1 } });
  const kv = await m.load(await fixture('kv'), { name: 'kv' });
  t.is(readU32(valueOf(await kv.invoke(ctx(), undefined, none))), 1);
  const writing = kv.invoke(ctx(), undefined, none);
  await store.close(); // the store goes away while the call runs: its commit cannot be made
  const e = await t.throwsAsync(writing);
  t.true(isPlughostError(e, 'UNAVAILABLE'), String(e));
  t.regex(e!.message, /KV writes could not be committed, and none was made/);
  t.like(kv.stats(), { inUse: 0, idle: 1 });
  // the permit came back once: ten calls at once never have two controllers in use
  let maxInUse = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      maxInUse = Math.max(maxInUse, kv.stats().inUse);
      await new Promise((r) => setImmediate(r));
    }
  })();
  await Promise.all(Array.from({ length: 10 }, () => kv.invoke(ctx({ kvAccess: 'none' }), 'get', enc('n'))));
  sampling = false;
  await sampler;
  t.is(maxInUse, 1);
});

test.serial('a module\'s first call (its function list) is retried when its worker is lost to another call\'s timeout', async (t) => {
  const m = await manager(t, { workers: 1, limits: { maxExecutionMs: 300 } });
  const faults = await m.load(await fixture('faults'));
  const introspect = await m.load(await fixture('introspect'));
  const looping = faults.invoke(ctx(), 'loop', none);
  looping.catch(() => {});
  // queued behind the loop on the only worker, which its timeout then terminates
  const described = introspect.describe({});
  t.true(isPlughostError(await t.throwsAsync(looping), 'TIMEOUT'));
  const functions = await described;
  t.true(functions.length > 0, 'the description arrived from the replacement worker');
  t.is(m.stats().workerRestarts, 1);
});

test.serial('the function-writeable cache keeps at most 256 caller-chosen names', async (t) => {
  const store = lmdbStore(t);
  const m = await manager(t, { store });
  const g = await m.load(await fixture('kv-batch'), { name: 'kv-batch' });
  for (let i = 0; i < 300; i++) await g.invoke(ctx(), `no-such-function-${i}`, none);
  t.is(g.cachedFunctionNames, 256);
  t.is(g.knownWriteable('no-such-function-0'), undefined, 'the oldest names went first');
  t.is(typeof g.knownWriteable('no-such-function-299'), 'boolean', 'the newest is kept');
});

test.serial('KV through the host-call bridge (as for a remote store) keeps the same semantics as KV read in the workers', async (t) => {
  for (const kvInWorkers of [true, false]) {
    const store = lmdbStore(t);
    const m = await manager(t, { store, kvInWorkers });
    const kv = await m.load(await fixture('kv'), { name: 'kv' });
    await Promise.all(Array.from({ length: 200 }, () => kv.invoke(ctx(), undefined, none)));
    const stored = valueOf(await kv.invoke(ctx(), 'get', enc('n')));
    t.is(readU32(stored.subarray(1)), 200, `no lost update (kvInWorkers: ${kvInWorkers})`);
    t.is(readU32(valueOf(await kv.invoke(ctx(), 'twice', none))), 202, 'a call reads its own writes');
    valueOf(await kv.invoke(ctx(), 'set', kvSetArgs('color', 'teal')));
    t.is(new TextDecoder().decode(valueOf(await kv.invoke(ctx({ kvAccess: 'read' }), 'get', enc('color')))), '\u0001teal');
    t.true(m.stats().kvOps.kvGet! > 200, 'KV operations are counted wherever they ran');
  }
});

test.serial('the entry count of a scope is kept in the store, so a restart counts nothing on the main thread', async (t) => {
  const store = lmdbStore(t);
  const limits = { ...DEFAULT_KV_LIMITS, maxEntriesPerScope: 3 };
  const scope = { tenant: 't', module: 'counted' };
  const w = store.begin(scope, 'write', limits);
  await w.apply('kvSetBatch', [[['a', enc('1')], ['b', enc('2')]]]);
  await w.commit();
  const d = store.begin(scope, 'write', limits);
  await d.apply('kvDel', ['a']);
  await d.commit();
  // two more fit (1 + 2 = 3), a third does not: the count followed the delete
  const x = store.begin(scope, 'write', limits);
  await x.apply('kvSetBatch', [[['c', enc('3')], ['d', enc('4')]]]);
  await x.commit();
  const over = store.begin(scope, 'write', limits);
  await t.throwsAsync(over.apply('kvSet', ['e', enc('5')]), { message: /maxEntriesPerScope/ });
  over.rollback();
});

test.serial('a reader that may have seen a commit still on its way to disk is answered only once it is durable', async (t) => {
  const store = lmdbStore(t);
  const keys = { tenant: 't', module: 'barrier' };
  t.is(store.readBarrier(), undefined, 'nothing in flight: no wait');
  const { visible, durable } = store.commit(keys, { writes: [[Buffer.from('k'), enc('v')]], entryDelta: 1 });
  await visible;
  let isDurable = false;
  void durable.then(() => (isDurable = true));
  const barrier = store.readBarrier();
  t.truthy(barrier, 'a commit is visible but not yet known durable: readers wait');
  await barrier;
  await Promise.resolve();
  t.true(isDurable, 'the barrier opened only with the commit durable');
  t.is(store.readBarrier(), undefined);
});

test.serial('over the bridge, a write call retried after its worker was lost commits its writes', async (t) => {
  const store = lmdbStore(t);
  const m = await manager(t, { store, kvInWorkers: false, workers: 1, limits: { maxExecutionMs: 300 } });
  const faults = await m.load(await fixture('faults'));
  const kv = await m.load(await fixture('kv'), { name: 'kv' });
  valueOf(await kv.invoke(ctx(), 'get', enc('n'))); // a controller of kv exists before the loop
  const looping = faults.invoke(ctx(), 'loop', none);
  looping.catch(() => {});
  // queued behind the loop on the only worker, lost with it, run again on the replacement
  const incr = kv.invoke(ctx(), undefined, none);
  t.true(isPlughostError(await t.throwsAsync(looping), 'TIMEOUT'));
  t.is(readU32(valueOf(await incr)), 1);
  t.is(m.stats().workerRestarts, 1, 'the increment was queued on the worker that was stopped');
  const stored = valueOf(await kv.invoke(ctx(), 'get', enc('n')));
  t.is(readU32(stored.subarray(1)), 1, 'its write was committed');
});
