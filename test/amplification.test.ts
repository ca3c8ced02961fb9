// Amplification (#15): a guest can hand the host a list whose entries all point at the same
// big string, so that lifting it would copy far more than the guest's memory holds (a
// million entries naming one 1 MiB string: 12 MiB of guest memory, a terabyte of strings).
// Such a call fails fast with MEMORY_LIMIT, before its worker runs out of heap or the call
// into its time limit, and a batch host call with more items than maxBatchItems is answered
// err before its list is lifted at all. Serial: each test fills a worker's heap for a moment.
import test from 'ava';
import { buildFixture, fixture } from './fixtures/build.js';
import { ctx, manager } from './helpers/runtime.js';
import { lmdbStore } from './helpers/kv.js';
import { isPlughostError } from '../src/errors.js';
import { prepareGlue } from '../src/component/load.js';
import { LIFT_BUDGET_KEY, type LiftBudget } from '../src/component/lift-budget.js';

/** Args of the amplify guest's batch functions: n entries, all pointing at one string of `size` bytes. */
const batch = (n: number, size: number) => new Uint8Array(new Uint32Array([n, size]).buffer);
const MiB = 1 << 20;
/** Generous: the time limit must not be what ends these calls. */
const limits = { maxExecutionMs: 60_000 };

test.serial('list-functions or function-args naming one big string a million times fails fast with MEMORY_LIMIT, no worker runs out of heap', async (t) => {
  const m = await manager(t);
  const names = await m.load(await fixture('amplify'), { name: 'names', limits });
  const e = await t.throwsAsync(names.describe());
  t.true(isPlughostError(e, 'MEMORY_LIMIT'), String(e));
  t.regex(e!.message, /the guest made the host lift more than \d+ bytes out of its memory at once/);
  // function-args is asked for each function list-functions names: one here
  const pairs = await m.load(await buildFixture('amplify', (w) => w.replace('(global $names i32 (i32.const 1048576))', '(global $names i32 (i32.const 1))')), { name: 'pairs', limits });
  const e2 = await t.throwsAsync(pairs.describe());
  t.true(isPlughostError(e2, 'MEMORY_LIMIT'), String(e2));
  t.regex(e2!.message, /the guest made the host lift more than \d+ bytes/);
  // before: the worker copied strings until its heap ran out (a restart, seconds later)
  t.is(m.stats().workerRestarts, 0);
  t.is(m.stats().workers, 2);
});

test.serial('a batch host call over maxBatchItems is answered err before its list is lifted; within it, entries pointing at one big string fail fast with MEMORY_LIMIT', async (t) => {
  const m = await manager(t, { store: lmdbStore(t) });
  const amplify = await m.load(await fixture('amplify'), { name: 'amplify', limits });
  // 5M keys of 1 MiB each: lifted first, that is 5 TB of strings
  for (const fn of ['get-batch', 'set-batch', 'del-batch']) {
    const r = await amplify.invoke(ctx(), fn, batch(5_000_000, MiB));
    t.deepEqual(r, { ok: false, guestError: 'batch of 5000000 items exceeds the batch limit (maxBatchItems = 1000)' }, fn);
  }
  // at the limit, small: served
  t.deepEqual(await amplify.invoke(ctx(), 'set-batch', batch(1000, 16)), { ok: true, value: new Uint8Array() });
  t.deepEqual(await amplify.invoke(ctx(), 'get-batch', batch(1000, 16)), { ok: true, value: new Uint8Array() });
  t.deepEqual(await amplify.invoke(ctx(), 'del-batch', batch(1000, 16)), { ok: true, value: new Uint8Array() });
  // at the limit, each entry pointing at the same 1 MiB: a GiB to lift
  for (const fn of ['get-batch', 'set-batch', 'del-batch']) {
    const e = await t.throwsAsync(amplify.invoke(ctx(), fn, batch(1000, MiB)));
    t.true(isPlughostError(e, 'MEMORY_LIMIT'), `${fn}: ${String(e)}`);
    t.regex(e!.message, /the guest made the host lift more than \d+ bytes/, fn);
  }
  t.is(m.stats().workerRestarts, 0, 'no worker ran out of heap');
  t.deepEqual(await amplify.invoke(ctx(), undefined, new Uint8Array([1, 2, 3])), { ok: true, value: new Uint8Array([1, 2, 3]) }, 'the module still serves');
});

test('the glue is made to count what it lifts, and glue whose copies plughost cannot count is refused as INTERNAL', (t) => {
  // the shapes jco 1.35 lifts with (see load.ts prepareGlue), in a glue of a few lines
  const glue = (body: string) => `export function instantiate(memory0, len2, base2) {\n  const decoder = new TextDecoder();\n${body}\n}\n`;
  const lifting = glue(`  var result2 = [];
  for (let i = 0; i < len2; i++) {
    const base = base2 + i * 8;
    result2.push(decoder.decode(new Uint8Array(memory0.buffer, base, 8)));
  }
  var bytes = new Uint8Array(memory0.buffer.slice(base2, base2 + len2 * 1));
  return [result2, bytes];`);
  const { instantiate } = new Function(prepareGlue(lifting))() as { instantiate(m: WebAssembly.Memory, len: number, base: number): [string[], Uint8Array] };
  const memory = new WebAssembly.Memory({ initial: 1 });
  new Uint8Array(memory.buffer).fill(0x61);
  t.deepEqual(instantiate(memory, 2, 0), [['aaaaaaaa', 'aaaaaaaa'], new Uint8Array(2).fill(0x61)], 'outside a worker nothing is counted');
  // in a worker (worker/guards.ts): 2 elements of 8 bytes count 2 * (8 + 16), each string 8
  // more (64: still within), the 2 bytes after them take it past
  const key = Symbol.for(LIFT_BUDGET_KEY);
  const g = globalThis as Record<symbol, unknown>;
  g[key] = { used: 0, limit: 64, memoryBytes: 65536 };
  try {
    const counted = (new Function(prepareGlue(lifting))() as { instantiate: typeof instantiate }).instantiate;
    t.throws(() => counted(memory, 2, 0), { instanceOf: RangeError, message: /^the guest made the host lift more than 64 bytes out of its memory at once \(66 so far\)/ });
    (g[key] as LiftBudget).used = 0;
    t.throws(() => counted(memory, 10_000, 0), { instanceOf: WebAssembly.RuntimeError, message: 'a list of 10000 elements of 8 bytes does not fit in the guest memory' });
  } finally {
    delete g[key];
  }
  const refused = (body: string) => t.throws(() => prepareGlue(glue(body)), { message: /jco glue copies guest memory in a way plughost does not know how to count against its lift budget/ });
  const e = refused('  for (let j = 0; j < len2; j++) {\n    const base = base2 + j * 8;\n  }');
  t.true(isPlughostError(e, 'INTERNAL'));
  refused('  return new Uint8Array(memory0.buffer.slice(base2, len2));');
  refused('  const d2 = new TextDecoder(["latin1"].join());');
});
