import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { coreFixture, fixture } from './fixtures/build.js';
import { ctx, manager, none, readU32, u32, valueOf } from './helpers/runtime.js';
import { waitFor } from './helpers/wait.js';
import { isPlughostError } from '../src/errors.js';

test.serial('concurrent first use of a module compiles it once', async (t) => {
  const m = await manager(t);
  const bytes = await fixture('echo');
  const runtimes = await Promise.all(Array.from({ length: 8 }, () => m.load(bytes)));
  t.true(runtimes.every((r) => r === runtimes[0]));
  t.is(m.stats().compilations, 1);
  t.deepEqual([...valueOf(await runtimes[0]!.invoke(ctx(), undefined, new Uint8Array([7, 8])))], [7, 8]);
});

test.serial('linear memory persists across calls from different contexts on one controller', async (t) => {
  const m = await manager(t);
  const counter = await m.load(await fixture('counter'));
  const counts = [];
  for (const tenant of ['a', 'b', 'c']) counts.push(readU32(valueOf(await counter.invoke(ctx({ tenant, subject: tenant }), undefined, none))));
  t.deepEqual(counts, [1, 2, 3]);
  t.like(counter.stats(), { created: 1, reused: 2, idle: 1, inUse: 0 });
});

test.serial('the semaphore caps controllers in use at maxPoolSize under 10x oversubscription, and gives permits back', async (t) => {
  const m = await manager(t, { limits: { maxPoolSize: 2 } });
  const counter = await m.load(await fixture('counter'));
  let maxInUse = 0;
  let maxLive = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const s = counter.stats();
      maxInUse = Math.max(maxInUse, s.inUse);
      maxLive = Math.max(maxLive, s.inUse + s.idle);
      await new Promise((r) => setImmediate(r));
    }
  })();
  const results = await Promise.all(Array.from({ length: 20 }, () => counter.invoke(ctx(), undefined, none)));
  sampling = false;
  await sampler;
  t.is(results.length, 20);
  t.is(maxInUse, 2, 'two controllers were busy at once, never more');
  t.true(maxLive <= 2, 'the pool never held more than maxPoolSize');
  const s = counter.stats();
  t.like(s, { inUse: 0, waiters: 0, created: 2 });
  t.is(s.idle, 2, 'idle controllers wait in the pool holding no permit');
  // the permits are free again: two calls at once proceed without waiting
  await Promise.all([counter.invoke(ctx({ deadline: Date.now() + 2000 }), undefined, none), counter.invoke(ctx({ deadline: Date.now() + 2000 }), undefined, none)]);
  t.is(counter.stats().created, 2);
});

test.serial('a waiter past its deadline fails with POOL_EXHAUSTED, and cancellation stops a waiting call', async (t) => {
  const m = await manager(t, { limits: { maxPoolSize: 1 } });
  const echo = await m.load(await fixture('echo'));
  const held = await echo.acquire({}, { deadline: Date.now() + 1000 });
  const started = Date.now();
  const e = await t.throwsAsync(echo.invoke(ctx({ deadline: Date.now() + 100 }), undefined, none));
  t.true(isPlughostError(e, 'POOL_EXHAUSTED'), String(e));
  t.true(Date.now() - started < 1000);
  const abort = new AbortController();
  const waiting = echo.invoke(ctx({ signal: abort.signal }), undefined, none);
  await sleep(20);
  t.is(echo.stats().waiters, 1);
  abort.abort();
  t.true(isPlughostError(await t.throwsAsync(waiting), 'CANCELLED'));
  echo.release(held);
  t.deepEqual([...valueOf(await echo.invoke(ctx(), undefined, new Uint8Array([1])))], [1]);
  t.is(echo.stats().waiters, 0);
});

test.serial('a guest err keeps the controller; a trap drops it and the next call gets a fresh one', async (t) => {
  const m = await manager(t, { workers: 1 });
  const faults = await m.load(await fixture('faults'));
  t.is(readU32(valueOf(await faults.invoke(ctx(), undefined, none))), 1);
  t.deepEqual(await faults.invoke(ctx(), 'err', none), { ok: false, guestError: 'boom: the guest said no' });
  t.is(readU32(valueOf(await faults.invoke(ctx(), undefined, none))), 3, 'same controller after err');
  const e = await t.throwsAsync(faults.invoke(ctx(), 'trap', none));
  t.true(isPlughostError(e, 'TRAP'), String(e));
  t.regex(e!.message, /unreachable/);
  t.is(readU32(valueOf(await faults.invoke(ctx(), undefined, none))), 1, 'a fresh controller after the trap');
  t.like(faults.stats(), { created: 2, inUse: 0, idle: 1 });
  t.is(faults.stats().dropped.trap, 1);
});

test.serial('an infinite loop times out within its limit + 100 ms while other modules and the main thread keep going', async (t) => {
  const m = await manager(t, { limits: { maxExecutionMs: 300 } });
  const faults = await m.load(await fixture('faults'));
  const echo = await m.load(await fixture('echo'));
  await echo.invoke(ctx(), undefined, none);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const started = performance.now();
  let echoes = 0;
  let looping = true;
  const loop = faults.invoke(ctx(), 'loop', none).finally(() => (looping = false));
  const others = (async () => {
    while (looping) {
      await echo.invoke(ctx(), undefined, none);
      echoes++;
    }
  })();
  const e = await t.throwsAsync(loop);
  const elapsed = performance.now() - started;
  await others;
  clearInterval(timer);
  t.true(isPlughostError(e, 'TIMEOUT'), String(e));
  t.true(elapsed >= 295 && elapsed < 400, `timed out after ${elapsed.toFixed(0)} ms`);
  t.true(echoes > 10, `${echoes} echo calls completed during the loop`);
  t.true(ticks >= 15, `the main thread timer fired ${ticks} times`);
  t.is(faults.stats().dropped.timeout, 1);
  t.is(m.stats().workerRestarts, 1);
  t.is(readU32(valueOf(await faults.invoke(ctx(), undefined, none))), 1, 'the module serves again on a fresh controller');
  t.is(m.stats().workers, 2, 'a spare took the stopped worker\'s place');
});

test.serial('calls are not queued behind a call that has run long while another worker can take them', async (t) => {
  const m = await manager(t, { limits: { maxExecutionMs: 3000 } });
  const faults = await m.load(await fixture('faults'));
  const echo = await m.load(await fixture('echo'));
  let looping = true;
  const loop = faults.invoke(ctx(), 'loop', none).finally(() => (looping = false));
  t.true(await waitFor(() => m.workers.some((w) => w.stalled), 5000, 5), 'the loop is running');
  // a burst, so that both workers have a queue when the later calls pick one
  const results = await Promise.all(Array.from({ length: 32 }, (_, i) => echo.invoke(ctx(), undefined, u32(i))));
  t.deepEqual(results.map((r) => readU32(valueOf(r))), Array.from({ length: 32 }, (_, i) => i));
  t.true(looping, 'every echo call was answered while the loop still ran, none waited behind it');
  t.true(isPlughostError(await t.throwsAsync(loop), 'TIMEOUT'));
});

test.serial('a memory bomb hits the memory cap cleanly and the runtime keeps working', async (t) => {
  const m = await manager(t, { limits: { maxMemoryBytes: 4 << 20 } });
  const faults = await m.load(await fixture('faults'));
  const e = await t.throwsAsync(faults.invoke(ctx(), 'bomb', none));
  t.true(isPlughostError(e, 'MEMORY_LIMIT'), String(e));
  t.regex(e!.message, /memory cap of 4194304 bytes/);
  t.is(faults.stats().dropped.memory, 1);
  // a single grow within the cap works, past it traps
  t.is(readU32(valueOf(await faults.invoke(ctx(), 'grow', u32(16)))), 18);
  t.is(readU32(valueOf(await faults.invoke(ctx(), undefined, none))), 2);
});

test.serial('a failing init discards the controller and fails the call with the guest\'s message', async (t) => {
  const m = await manager(t);
  const r = await m.load(await fixture('failing-init'));
  for (let i = 0; i < 2; i++) {
    const e = await t.throwsAsync(r.invoke(ctx(), undefined, none));
    t.true(isPlughostError(e, 'INIT_FAILED'), String(e));
    t.is(e!.message, 'init failed: init refused: missing configuration');
  }
  t.like(r.stats(), { created: 0, idle: 0, inUse: 0 });
  t.is(r.stats().dropped.init, 2);
});

test.serial('init runs once per controller, and its time counts against the call\'s limit', async (t) => {
  const m = await manager(t);
  const r = await m.load(await fixture('slow-init'));
  const runs = [];
  for (let i = 0; i < 4; i++) runs.push(readU32(valueOf(await r.invoke(ctx(), undefined, none))));
  t.deepEqual(runs, [1, 1, 1, 1]);
  const tight = await manager(t, { limits: { maxExecutionMs: 1 } });
  const slow = await tight.load(await fixture('slow-init'));
  t.true(isPlughostError(await t.throwsAsync(slow.invoke(ctx(), undefined, none)), 'TIMEOUT'));
});

test.serial('malformed bytes, a core module, a foreign import and another world are refused, leaving nothing loaded', async (t) => {
  const m = await manager(t);
  const echo = await fixture('echo');
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array([1, 2, 3, 4]), /not a WebAssembly binary/],
    [await coreFixture('echo'), /a core WebAssembly module, not a component/],
    [echo.subarray(0, echo.length - 40), /malformed component/],
    [await fixture('wasi-import'), /imports "wasi:cli\/environment@0\.2\.0"/],
    [await fixture('other-world'), /does not export invoke \(it exports run\)/],
  ];
  for (const [bytes, message] of cases) {
    const e = await t.throwsAsync(m.load(bytes));
    t.true(isPlughostError(e, 'INVALID_MODULE'), String(e));
    t.regex(e!.message, message);
  }
  t.is(m.stats().runtimes, 0);
});

test.serial('introspection reads every optional export; a module without them describes as empty', async (t) => {
  const m = await manager(t);
  const intro = await m.load(await fixture('introspect'));
  t.deepEqual(await intro.describe(), [
    { name: undefined, args: [], returns: 'bytes', writeable: false, comment: undefined },
    { name: 'add', args: [['a', 'u32'], ['b', 'u32']], returns: 'u32', writeable: true, comment: 'adds two numbers' },
    { name: 'greet', args: [['who', 'string']], returns: 'string', writeable: false, comment: undefined },
  ]);
  t.deepEqual(await (await m.load(await fixture('echo'))).describe(), []);
});

test.serial('idle controllers are evicted after the idle time, and the process-wide cap evicts the least recently used', async (t) => {
  const m = await manager(t, { idleTimeoutMs: 50 });
  const echo = await m.load(await fixture('echo'));
  await echo.invoke(ctx(), undefined, none);
  t.is(echo.stats().idle, 1);
  await sleep(250);
  t.like(echo.stats(), { idle: 0, evicted: 1 });
  t.is(m.stats().liveControllers, 0);

  const capped = await manager(t, { maxControllers: 1 });
  const a = await capped.load(await fixture('echo'));
  const b = await capped.load(await fixture('counter'));
  await a.invoke(ctx(), undefined, none);
  await b.invoke(ctx(), undefined, none);
  t.is(a.stats().evicted, 1);
  t.is(capped.stats().liveControllers, 1);
});

/** MessagePorts open in this process: each worker's bridge holds one until its worker is closed. */
const openPorts = () => process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length;

/** Ports closed by an earlier teardown leave the active list a loop turn or more later, so wait for none. */
const noPortsWithin = (ms: number) => waitFor(() => openPorts() === 0, ms, 10);

test.serial('close() drains calls in flight and leaves no worker behind', async (t) => {
  t.true(await noPortsWithin(2000), 'the earlier tests closed their workers');
  const m = await manager(t);
  t.true(openPorts() > 0, 'the manager\'s workers hold bridge ports while it is open');
  const counter = await m.load(await fixture('slow-init'));
  const inflight = counter.invoke(ctx(), undefined, none);
  await sleep(5);
  await m.close();
  t.is(readU32(valueOf(await inflight)), 1, 'the call in flight finished');
  t.is(m.stats().workers, 0);
  t.true(isPlughostError(await t.throwsAsync(counter.invoke(ctx(), undefined, none)), 'UNAVAILABLE'));
  t.true(await noPortsWithin(2000), 'every bridge port is closed');
});

test.serial('the hash guest computes FNV-1a of its args (the benchmark\'s real-work guest)', async (t) => {
  const m = await manager(t);
  const rt = await m.load(await fixture('hash'));
  const fnv1a = (b: Uint8Array) => b.reduce((h, x) => Math.imul(h ^ x, 0x01000193) >>> 0, 0x811c9dc5);
  for (const input of [new Uint8Array(), new TextEncoder().encode('plughost'), new Uint8Array(4096).map((_, i) => i * 7)]) {
    t.is(readU32(valueOf(await rt.invoke(ctx(), undefined, input))), fnv1a(input));
  }
});
