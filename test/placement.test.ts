// Where calls run when a guest spins: calls waiting behind a long-running call are taken
// back and placed on a free worker, and a module that ran past its time limit is
// quarantined (its calls run on fewer workers than there are) so it cannot occupy them all.
import test from 'ava';
import { fixture } from './fixtures/build.js';
import { ctx, manager, none, readU32, u32, valueOf } from './helpers/runtime.js';
import { waitFor } from './helpers/wait.js';
import { isPlughostError } from '../src/errors.js';

test.serial('calls already queued behind a call that turns out to spin are taken back and run on the free worker', async (t) => {
  const m = await manager(t, { limits: { maxExecutionMs: 3000 } });
  const faults = await m.load(await fixture('faults'));
  const echo = await m.load(await fixture('echo'));
  // a named call first: the module's function list is looked up once, so the loop below goes straight to a worker
  t.false((await faults.invoke(ctx(), 'err', none)).ok);
  await echo.invoke(ctx(), undefined, none);
  let looping = true;
  // the loop and a burst placed in the same instant: before the loop has run long, some of
  // the burst is queued on its worker (placement cannot yet tell it from a quick call)
  const loop = faults.invoke(ctx(), 'loop', none).then(() => undefined, (e: unknown) => e).finally(() => (looping = false));
  const results = await Promise.all(Array.from({ length: 32 }, (_, i) => echo.invoke(ctx(), undefined, u32(i))));
  t.deepEqual(results.map((r) => readU32(valueOf(r))), Array.from({ length: 32 }, (_, i) => i));
  t.true(looping, 'every echo call was answered while the loop still ran');
  // on a quiet machine some of the burst is queued behind the loop and moved (without the
  // move they would wait out its 3 s); on a busy one the loop may already count as stalled
  // when the burst is placed, and then nothing needs to move
  t.log(`calls moved: ${m.stats().callsMoved}`);
  t.true(isPlughostError(await loop, 'TIMEOUT'));
});

test.serial('a module that ran past its time limit is quarantined: its calls take at most workers - 1 workers, so others keep going', async (t) => {
  const m = await manager(t, { workers: 2 });
  const faults = await m.load(await fixture('faults'), { limits: { maxExecutionMs: 1500 } });
  const echo = await m.load(await fixture('echo'));
  await echo.invoke(ctx(), undefined, none);
  t.true(isPlughostError(await t.throwsAsync(faults.invoke(ctx(), 'loop', none)), 'TIMEOUT'));
  t.true(faults.quarantine.active);

  // two spinning calls at once: one runs, the other waits its turn instead of taking the second worker
  let firstDone = false;
  const loops = [0, 1].map(() => faults.invoke(ctx(), 'loop', none).finally(() => (firstDone = true)));
  t.true(await waitFor(() => m.workers.some((w) => w.stalled), 5000, 5), 'a loop is running');
  const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => echo.invoke(ctx(), undefined, u32(i))));
  t.deepEqual(answers.map((r) => readU32(valueOf(r))), Array.from({ length: 8 }, (_, i) => i));
  t.false(firstDone, 'the echo calls were answered while the first loop still ran');
  for (const e of await Promise.all(loops.map((l) => t.throwsAsync(l)))) t.true(isPlughostError(e, 'TIMEOUT'), String(e));

  // at the limit: with its one place taken, a quarantined module's call waits, within its deadline
  const busy = faults.invoke(ctx(), 'loop', none);
  t.true(await waitFor(() => m.workers.some((w) => w.stalled), 5000, 5), 'a loop is running');
  const e = await t.throwsAsync(faults.invoke(ctx({ deadline: Date.now() + 200 }), undefined, none));
  t.true(isPlughostError(e, 'POOL_EXHAUSTED'), String(e));
  t.regex(e!.message, /quarantined after a call ran past its time limit: at most 1 of its calls run at once/);
  t.true(isPlughostError(await t.throwsAsync(busy), 'TIMEOUT'));
});

test.serial('quarantineMs: 0 turns quarantine off: after a timeout the module still uses every worker', async (t) => {
  const m = await manager(t, { workers: 2, quarantineMs: 0 });
  const faults = await m.load(await fixture('faults'), { limits: { maxExecutionMs: 1500 } });
  t.true(isPlughostError(await t.throwsAsync(faults.invoke(ctx(), 'loop', none)), 'TIMEOUT'));
  t.false(faults.quarantine.active);
  const busy = faults.invoke(ctx(), 'loop', none);
  t.true(await waitFor(() => m.workers.some((w) => w.stalled), 5000, 5), 'a loop is running');
  // the module's second call runs on the other worker at once
  t.true(readU32(valueOf(await faults.invoke(ctx({ deadline: Date.now() + 1000 }), undefined, none))) >= 1);
  t.true(isPlughostError(await t.throwsAsync(busy), 'TIMEOUT'));
});
