// `run`: a guest calls another module's function from inside its call. At the runtime level
// (no gRPC): the nested call runs in its caller's worker, under its caller's time, and its
// writes are held and committed (or dropped) with the top-level call.
import test, { type ExecutionContext } from 'ava';
import { buildFixture, fixture, withCustomSection } from './fixtures/build.js';
import { lmdbStore } from './helpers/kv.js';
import { ctx, manager, none } from './helpers/runtime.js';
import { waitFor } from './helpers/wait.js';
import type { RuntimeManagerOptions } from '../src/runtime/manager.js';
import type { ModuleLimitsInput } from '../src/runtime/options.js';
import type { Runtime } from '../src/runtime/runtime.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** Two modules of the run guest (distinct hashes, so distinct KV scopes `a` and `b`). */
async function setup(t: ExecutionContext, options: RuntimeManagerOptions = {}, limits: ModuleLimitsInput = {}) {
  const store = lmdbStore(t);
  const m = await manager(t, { store, ...options });
  const bytes = await fixture('run');
  const a = await m.load(bytes, { name: 'a', limits });
  const b = await m.load(withCustomSection(bytes, 'b'), { name: 'b', limits });
  return { m, store, a, b };
}

/** What the guest answered, as text (its err as `err: ...`). */
async function call(rt: Runtime, fn: string | undefined, args: string, overrides = {}): Promise<string> {
  const r = await rt.invoke(ctx(overrides), fn, enc(args));
  return r.ok ? dec(r.value) : `err: ${r.guestError}`;
}

test('a guest runs another module and gets its answer; a chain several deep answers through every level', async (t) => {
  const { a, b } = await setup(t);
  t.is(await call(a, 'relay', `${b.hash}|echo|hello`), 'hello');
  t.is(await call(a, 'relay', `${b.hash}|relay|${a.hash}|relay|${b.hash}|echo|deep`), 'deep');
  // the callee's own err comes back as the err of run, and the caller goes on
  t.is(await call(a, 'relay', `${b.hash}|write-fail|k`), 'err: failed after write');
  t.is(await call(a, 'relay', `nope|echo|x`), 'err: run nope: no module with hash nope is loaded');
});

test('a chain deeper than maxRunDepth gets a clear err at the call past it', async (t) => {
  const { a } = await setup(t, { maxRunDepth: 3 });
  const chain = (n: number) => `${a.hash}|relay|`.repeat(n) + `${a.hash}|echo|bottom`;
  t.is(await call(a, 'relay', chain(2)), 'bottom', 'depth 3 is allowed');
  t.regex(await call(a, 'relay', chain(3)), /^err: run .*: the chain of calls would be 4 deep, past maxRunDepth \(3\)$/);
});

test('a module that calls itself with a pool of 1 fails fast instead of waiting for its own permit; with room it is served', async (t) => {
  const { a, m } = await setup(t, { acquireTimeoutMs: 60_000 }, { maxPoolSize: 1 });
  const started = Date.now();
  const answer = await call(a, 'relay', `${a.hash}|echo|me`);
  t.regex(answer, /^err: run a: no controller of .* is free and this call's own chain holds 1 of its 1/);
  t.true(Date.now() - started < 30_000, 'it did not wait out acquireTimeoutMs');
  t.is(a.stats().inUse, 0);
  const wider = await m.load(withCustomSection(await fixture('run'), 'wide'), { name: 'wide', limits: { maxPoolSize: 2 } });
  t.is(await call(wider, 'relay', `${wider.hash}|echo|me`), 'me');
});

test('nested writes commit with the top-level call, and roll back with it when it fails afterwards', async (t) => {
  const { a, b } = await setup(t);
  // b writes k in its own scope; a then fails: nothing of the tree is written
  t.is(await call(a, 'relay-fail', `${b.hash}|write|k`), 'err: outer failed after run');
  t.is(await call(b, 'read', 'k'), '(none)');
  // the same, with a succeeding: b's write is there, in b's scope only
  t.is(await call(a, 'relay', `${b.hash}|write|k`), '');
  t.is(await call(b, 'read', 'k'), 'w');
  t.is(await call(a, 'read', 'k'), '(none)');
  // a nested call that fails leaves nothing, though its caller succeeds
  t.is(await call(a, 'relay', `${b.hash}|write-fail|k2`), 'err: failed after write');
  t.is(await call(b, 'read', 'k2'), '(none)');
});

test('calls of one tree read what the calls before them wrote, in their own scope and their caller\'s', async (t) => {
  const { a, b } = await setup(t);
  // a writes outer=1, then runs itself, which reads outer: the same scope, not yet committed
  t.is(await call(a, 'write-relay', `${a.hash}|read|outer`), '1');
  // a runs itself to write outer=w, then reads it back
  t.is(await call(a, 'relay-read', `${a.hash}|write|outer`), 'w');
  // a later call of the tree reads what an earlier one (not its caller) wrote, before the tree commits
  t.is(await call(a, 'relay2', `${b.hash}|write|sib;${b.hash}|read|sib`), 'w');
  t.is(await call(a, 'relay2', `${b.hash}|write-fail|sib2;${b.hash}|read|sib2`), '(none)');
  // b's scope is b's: a's outer is not there
  t.is(await call(a, 'write-relay', `${b.hash}|read|outer`), '(none)');
  // two levels down, through b, back to a's scope
  t.is(await call(a, 'write-relay', `${b.hash}|relay|${a.hash}|read|outer`), '1');
  // (another tenant, whose scopes are empty) a's scope written two levels down: not seen
  // when b, in between, failed after it (b's part of the tree is dropped, with what it called)...
  const fresh = { tenant: 'fresh' };
  t.is(await call(a, 'relay-read', `${b.hash}|relay-fail|${a.hash}|write|outer`, fresh), '(none)');
  t.is(await call(a, 'read', 'outer', fresh), '(none)');
  // ...and seen once b succeeded
  t.is(await call(a, 'relay-read', `${b.hash}|relay|${a.hash}|write|outer`, fresh), 'w');
  t.is(await call(a, 'read', 'outer', fresh), 'w');
});

test('a nested call that traps fails its run with err; the caller goes on and the trapped controller is dropped', async (t) => {
  const { a, b } = await setup(t);
  t.regex(await call(a, 'relay', `${b.hash}|relay|no-bar`), /^err: run b: it trapped: /);
  t.is(b.stats().dropped.trap, 1);
  t.is(await call(a, 'relay', `${b.hash}|echo|again`), 'again');
});

test('a nested call that spins is stopped at its own time limit, which fails the whole call with TIMEOUT', async (t) => {
  const { a, b, m } = await setup(t);
  const spinning = await m.load(withCustomSection(await fixture('run'), 'spin'), { name: 'spin', limits: { maxExecutionMs: 300 } });
  const e = await t.throwsAsync(a.invoke(ctx(), 'relay', enc(`${spinning.hash}|spin|`)));
  t.is((e as { code?: string }).code, 'TIMEOUT');
  t.regex(e!.message, /a call it made with run ran past the time limit of spin \(300 ms\)/);
  t.is(await call(a, 'relay', `${b.hash}|echo|after`), 'after');
});

test("a nested call inherits its caller's deadline", async (t) => {
  // the callee may run for a minute by its own limit; its caller's deadline is 400 ms away
  const { a, b } = await setup(t, {}, { maxExecutionMs: 60_000 });
  const started = Date.now();
  const e = await t.throwsAsync(a.invoke(ctx({ deadline: Date.now() + 400 }), 'relay', enc(`${b.hash}|spin|`)));
  t.is((e as { code?: string }).code, 'TIMEOUT');
  // stopped by the caller's clock: the watchdog names the nested call's limit or its caller's, whichever it saw first
  t.regex(e!.message, /what was left of its caller's time limit|the call ran past its time limit of \d+ ms/);
  t.true(Date.now() - started < 30_000, 'not the callee\'s own minute');
});

test('a nested writer reads what was committed before it took its lock, not the snapshot its caller started with: no increment is lost', async (t) => {
  const { a, b, m } = await setup(t);
  const counter = await m.load(await fixture('kv'), { name: 'counter' });
  const budget = await m.load(await fixture('budget'), { name: 'budget' });
  const tenths = (n: number) => String.fromCharCode(n, 0, 0, 0);
  // the caller reads KV first (its snapshot), spends a while in budget, then increments the counter through run;
  // meanwhile a direct increment of the counter commits. Five rounds: ten increments, none lost
  const rounds = 5;
  for (let i = 0; i < rounds; i++) {
    const nested = a.invoke(ctx(), 'write-relay', enc(`${b.hash}|relay2|${budget.hash}||${tenths(2)};${counter.hash}|incr|`));
    await new Promise((r) => setTimeout(r, 20));
    const direct = await counter.invoke(ctx(), undefined, none);
    t.true(direct.ok);
    t.true((await nested).ok);
  }
  const r = await counter.invoke(ctx(), 'get', enc('n'));
  t.true(r.ok);
  if (r.ok) t.is(new DataView(r.value.buffer, r.value.byteOffset + 1).getUint32(0, true), 2 * rounds);
  // and many at once, from two tenants' worth of callers and direct increments
  const many = await Promise.all(Array.from({ length: 24 }, (_, i) => (i % 2 ? a.invoke(ctx(), 'relay', enc(`${counter.hash}||`)) : counter.invoke(ctx(), undefined, none))));
  t.true(many.every((x) => x.ok));
  const after = await counter.invoke(ctx(), 'get', enc('n'));
  if (after.ok) t.is(new DataView(after.value.buffer, after.value.byteOffset + 1).getUint32(0, true), 2 * rounds + 24);
});

test('rows of a batch each make their own nested calls: each row commits its own tree, and a later row reads an earlier row\'s nested writes', async (t) => {
  const { a, b } = await setup(t);
  const rows = [`${b.hash}|write|r1`, `${b.hash}|read|r1`, `${b.hash}|write-fail|r2`, `${b.hash}|read|r2`].map(enc);
  const out = await a.invokeBatch(ctx(), 'relay', rows);
  t.deepEqual(
    out.map((o) => (o.ok ? dec(o.value) : 'guestError' in o ? `err: ${o.guestError}` : o.failure.code)),
    ['', 'w', 'err: failed after write', '(none)'],
  );
  t.is(await call(b, 'read', 'r1'), 'w');
  t.is(await call(b, 'read', 'r2'), '(none)');
});

test('with KV over the host-call bridge (a store the workers cannot read), nested writes also commit or roll back with the top-level call', async (t) => {
  const { a, b } = await setup(t, { kvInWorkers: false });
  t.is(await call(a, 'relay-fail', `${b.hash}|write|k`), 'err: outer failed after run');
  t.is(await call(b, 'read', 'k'), '(none)');
  t.is(await call(a, 'relay', `${b.hash}|write|k`), '');
  t.is(await call(b, 'read', 'k'), 'w');
  t.is(await call(a, 'relay-read', `${a.hash}|write|outer`), 'w', 'a call on its caller\'s scope shares its transaction');
  // as with local KV: a write two levels down goes with the call in between that failed
  const fresh = { tenant: 'fresh' };
  t.is(await call(a, 'relay-read', `${b.hash}|relay-fail|${a.hash}|write|outer`, fresh), '(none)');
  t.is(await call(a, 'relay-read', `${b.hash}|relay|${a.hash}|write|outer`, fresh), 'w');
  // a later call of the tree reads what an earlier one wrote, before the tree commits
  t.is(await call(a, 'relay2', `${b.hash}|write|k3;${b.hash}|read|k3`, fresh), 'w');
});

test('two chains that each hold what the other waits for both get err within hostCallTimeoutMs, and nothing stays held', async (t) => {
  const { a, b } = await setup(t, { hostCallTimeoutMs: 500, acquireTimeoutMs: 60_000 }, { maxPoolSize: 1 });
  // a -> (spin a little by waiting on b) ... each top-level call holds its own module's only permit, then runs the other
  const [x, y] = await Promise.all([call(a, 'relay', `${b.hash}|relay|${a.hash}|echo|x`), call(b, 'relay', `${a.hash}|relay|${b.hash}|echo|y`)]);
  for (const answer of [x, y]) t.regex(answer, /^err: run [ab]: (no controller of .* (became free within|is free)|.*own chain)/);
  t.is(a.stats().inUse + b.stats().inUse, 0);
  t.is(await call(a, 'relay', `${b.hash}|echo|free`), 'free');
});

test('a nested call waiting for a controller stops waiting when its caller cancels', async (t) => {
  const { a, m } = await setup(t, { acquireTimeoutMs: 60_000, hostCallTimeoutMs: 60_000 });
  const busy = await m.load(withCustomSection(await fixture('run'), 'busy'), { name: 'busy', limits: { maxPoolSize: 1, maxExecutionMs: 5_000 } });
  // the only controller of busy spins until its limit
  const spinning = busy.invoke(ctx(), 'spin', enc('')).catch((e: Error) => e);
  t.true(await waitFor(() => busy.stats().inUse === 1, 30_000));
  const ac = new AbortController();
  const waiting = call(a, 'relay', `${busy.hash}|echo|x`, { signal: ac.signal });
  t.true(await waitFor(() => busy.stats().waiters === 1, 30_000));
  ac.abort();
  t.is(await waiting, 'err: run busy: the caller cancelled while waiting for a controller');
  t.is(((await spinning) as { code?: string }).code, 'TIMEOUT');
});

/** The run guest with a function-writeable export: yes only for `write-fail` (its name is 10 bytes starting with "w"), else no. */
function writeableOnlyForWriteFail(): Promise<Uint8Array> {
  return buildFixture('run', (wat) =>
    wat.replace(
      /\)\s*$/,
      `  (func (export "function-writeable") (param $nd i32) (param $np i32) (param $nl i32) (result i32)
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store8 (i32.const 20) (i32.and (i32.eq (local.get $nl) (i32.const 10)) (i32.eq (i32.load8_u (local.get $np)) (i32.const 119))))
    (i32.const 16))
)
`,
    ),
  );
}

for (const kvInWorkers of [true, false]) {
  const where = kvInWorkers ? 'KV in the workers' : 'KV over the bridge';
  test(`${where}: a nested call of a function that says it does not write cannot write, the first time too`, async (t) => {
    const { a, m } = await setup(t, { kvInWorkers });
    const w = await m.load(await writeableOnlyForWriteFail(), { name: 'w' });
    for (const key of ['k1', 'k2']) t.regex(await call(a, 'relay', `${w.hash}|write|${key}`), /^err: kvSet: KV write denied/);
    t.is(await call(w, 'read', 'k1'), '(none)');
  });

  test(`${where}: a nested writer that fails after a reader of its scope leaves the tree able to read it`, async (t) => {
    const { a, m } = await setup(t, { kvInWorkers });
    const w = await m.load(await writeableOnlyForWriteFail(), { name: 'w' });
    // w reads k (a reader's transaction), then through a, w's write-fail writes k and fails, then w reads k again
    t.is(await call(w, 'relay2', `${w.hash}|read|k;${a.hash}|relay2|${w.hash}|write-fail|k;${w.hash}|read|k`), '(none)');
  });

  test(`${where}: rows of a batch that run other modules commit each row's nested writes`, async (t) => {
    const { m, b } = await setup(t, { kvInWorkers });
    // a router that imports run but no KV of its own
    const router = await m.load(withCustomSection(await fixture('run'), 'router'), { name: 'router' });
    const out = await router.invokeBatch(ctx(), 'relay', [`${b.hash}|write|r1`, `${b.hash}|write|r2`].map(enc));
    t.true(out.every((o) => o.ok));
    t.is(await call(b, 'read', 'r1'), 'w');
    t.is(await call(b, 'read', 'r2'), 'w');
  });
}

test("a nested call's log lines all arrive, as its own module's", async (t) => {
  const lines: { module: string; message: string }[] = [];
  const m = await manager(t, { guestLogLinesPerSecond: 1e6, guestLogBytesPerSecond: 1e9, onGuestLog: (e) => void lines.push({ module: e.module, message: e.message }) });
  const a = await m.load(await fixture('run'), { name: 'a' });
  const logger = await m.load(await fixture('logger'), { name: 'logger' });
  const N = 200;
  for (let i = 0; i < N; i++) t.is(await call(a, 'relay', `${logger.hash}||s${i}`, { kvAccess: 'none' }), `s${i}`);
  await Promise.all(Array.from({ length: N }, (_, i) => call(a, 'relay', `${logger.hash}||c${i}`, { kvAccess: 'none' })));
  t.is(lines.length, 2 * N);
  t.true(lines.every((l) => l.module === 'logger'));
});
