// The v2 call path's defects, each fixed with a test: bounded close, a commit that fails,
// the first call's introspection retried when its worker is lost, bounded caches, KV read
// in the workers with writers serialized, the durability barrier of readers, and one time
// budget for the whole of a call.
import test from 'ava';
import { fixture, withCustomSection } from './fixtures/build.js';
import { ctx, manager, none, readU32, u32, valueOf } from './helpers/runtime.js';
import { kvSetArgs, lmdbStore } from './helpers/kv.js';
import { isPlughostError } from '../src/errors.js';
import { DEFAULT_KV_LIMITS } from '../src/runtime/options.js';
import type { Runtime } from '../src/runtime/runtime.js';

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
  // the loop stops at 300 ms; the retried call (a new controller on a new worker) has the default 10 s, for a busy machine
  const m = await manager(t, { store, kvInWorkers: false, workers: 1 });
  const faults = await m.load(await fixture('faults'), { limits: { maxExecutionMs: 300 } });
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

test.serial('one time budget covers a call: a new controller\'s init, the function-writeable probe and the export together are stopped at its limit', async (t) => {
  // The guest works one part in init and in function-writeable, and in invoke as many tenths
  // of a part as asked. Each check gets a copy of it (a Runtime of its own) whose limit is 1.5
  // parts at the speed just measured, so a part alone fits. A call made of a part and then
  // work without end must be stopped at the limit (+1/3 of it for latency); per-step budgets
  // stop it only after the part and a whole limit more, at 5/3 of the limit.
  t.timeout(120_000, 'a busy machine can make a part alone overrun, and it is tried again');
  const ENDLESS = 0xffffffff;
  const m = await manager(t, { limits: { maxExecutionMs: 60_000 } }); // room for the limits of a slow machine
  const bytes = await fixture('budget');
  const probe = await m.load(bytes); // for measuring only
  type Outcome = { ms: number; error?: unknown };
  const call = async (rt: Runtime, kvAccess: 'none' | 'write', name: string | undefined, tenths: number): Promise<Outcome> => {
    const t0 = performance.now();
    try {
      t.is(readU32(valueOf(await rt.invoke(ctx({ kvAccess }), name, u32(tenths)))), 1, 'init ran once on the controller');
      return { ms: performance.now() - t0 };
    } catch (error) {
      return { ms: performance.now() - t0, error };
    }
  };
  await call(probe, 'none', undefined, 0);
  let copies = 0;
  const copy = async () => {
    const parts = [];
    for (let i = 0; i < 3; i++) parts.push((await call(probe, 'none', undefined, 2)).ms * 5);
    const limit = Math.ceil(parts.sort((a, b) => a - b)[1]! * 1.5);
    return { limit, rt: await m.load(withCustomSection(bytes, `copy-${++copies}`), { limits: { maxExecutionMs: limit } }) };
  };
  /** A copy with a controller whose init ran; a machine busier than measured can make init overrun: then another copy (5 at most). */
  const initialised = async () => {
    for (let tries = 1; ; tries++) {
      const c = await copy();
      const init = await call(c.rt, 'none', undefined, 0);
      if (init.error === undefined || tries === 5) return { ...c, init };
      t.log(`init alone overran a limit of ${c.limit} ms (${init.ms.toFixed(0)} ms): another copy`);
    }
  };
  const verdicts: Record<string, string> = {};
  const judge = (what: string, limit: number, o: Outcome, expect: 'fits' | 'stopped at its limit') => {
    const seen = `${o.error === undefined ? 'succeeded' : isPlughostError(o.error, 'TIMEOUT') ? 'TIMEOUT' : String(o.error)} after ${o.ms.toFixed(0)} ms`;
    t.log(`${what}: limit ${limit} ms, ${seen}`);
    const ok = expect === 'fits' ? o.error === undefined : isPlughostError(o.error, 'TIMEOUT') && o.ms <= (limit * 4) / 3;
    verdicts[what] = ok ? expect : `${seen}, limit ${limit} ms`;
  };

  // each part alone fits
  const fresh = await initialised();
  judge('instantiation and init alone', fresh.limit, fresh.init, 'fits');
  for (let tries = 1; ; tries++) {
    const c = await initialised();
    const o = c.init.error === undefined ? await call(c.rt, 'write', 'asked-alone', 0) : c.init;
    if (o.error === undefined || tries === 5) {
      judge('function-writeable alone (initialised controller)', c.limit, o, 'fits');
      break;
    }
  }
  // a part, then work without end, in one call
  let c = await copy();
  judge('instantiation and init + an endless export', c.limit, await call(c.rt, 'none', undefined, ENDLESS), 'stopped at its limit');
  c = await copy();
  judge('instantiation and init + an endless function-writeable', c.limit, await call(c.rt, 'write', 'endless', 0), 'stopped at its limit');
  const warm = await initialised();
  t.is(warm.init.error, undefined, 'a controller of the last copy was initialised');
  judge('function-writeable + an endless export (initialised controller)', warm.limit, await call(warm.rt, 'write', 'asked-with-call', ENDLESS), 'stopped at its limit');
  t.is(warm.rt.stats().created, 1, 'that call ran on the controller already initialised');
  t.deepEqual(verdicts, {
    'instantiation and init alone': 'fits',
    'function-writeable alone (initialised controller)': 'fits',
    'instantiation and init + an endless export': 'stopped at its limit',
    'instantiation and init + an endless function-writeable': 'stopped at its limit',
    'function-writeable + an endless export (initialised controller)': 'stopped at its limit',
  });
});
