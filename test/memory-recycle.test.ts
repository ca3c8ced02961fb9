// Memory comes back (#15): a worker whose isolate holds far more than it started with after
// a call (workerRecycleHeapMb above) is recycled: the spare takes its place at once, it
// finishes the calls it has and stops, and its heap goes with it. Without that, V8 keeps a
// worker's heap for many seconds after a guest made it copy a few hundred MiB, and the
// process RSS stays hundreds of MiB up.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFixture, fixture } from './fixtures/build.js';
import { ctx, manager } from './helpers/runtime.js';
import { tempDir } from './helpers/kv.js';
import { waitFor } from './helpers/wait.js';
import { isPlughostError } from '../src/errors.js';
import { resolveRuntimeOptions } from '../src/runtime/options.js';

const MiB = 1 << 20;

/** Runs test/helpers/amplification-storm.ts in a process of its own and returns what it reports. */
async function storm(t: ExecutionContext, workerRecycleHeapMb: number) {
  const script = fileURLToPath(new URL('./helpers/amplification-storm.ts', import.meta.url));
  const config = JSON.stringify({ store: join(tempDir(t, 'plughost-storm'), 'kv'), workerRecycleHeapMb });
  // glibc's malloc keeps freed blocks of 128 KiB and more in its arenas once it has seen some
  // (its mmap threshold grows by itself), whatever the runtime does: fixed, freed buffers go
  // back to the system, and what stays is what the runtime holds (see the README)
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', script, config], { env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072' }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  child.stderr.on('data', (d: Buffer) => (err += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`the storm exited with ${code}: ${err}`);
  return JSON.parse(out) as { idle: number; peak: number; after: number; stopped: boolean; outcomes: Record<string, number>; workerRestarts: number; workerRecycles: number };
}

test.serial('after a storm of amplification calls every call has failed fast, and the process RSS is back within 64 MiB of its idle level', async (t) => {
  const r = await storm(t, 32);
  t.deepEqual(r.outcomes, { 'MEMORY_LIMIT (lift budget)': 32, 'batch of 5000 items exceeds the batch limit (maxBatchItems = 1000)': 8 });
  t.is(r.workerRestarts, 0, 'no worker ran out of heap');
  t.true(r.workerRecycles > 0 && r.stopped, 'heavy workers were recycled, and have stopped');
  // Measured on the 2-vCPU CI VM (idle 272-308 MiB): once the recycled workers had stopped,
  // the RSS stood -47 to -4 MiB from idle (7 runs; idle includes the warm-up's garbage); with
  // recycling off (workerRecycleHeapMb 0) +144 to +267 MiB (5 runs: V8 gives a worker's heap
  // back only 10-20 s later). Without the fixed mmap threshold, glibc added up to ~+300 MiB.
  const grown = r.after - r.idle;
  t.true(grown < 64, `RSS ${r.idle.toFixed(0)} MiB idle, ${r.peak.toFixed(0)} MiB at the peak, ${r.after.toFixed(0)} MiB after ${r.workerRecycles} recycles`);
  t.log(`RSS idle ${r.idle.toFixed(0)} MiB, peak ${r.peak.toFixed(0)} MiB, after ${r.after.toFixed(0)} MiB (${grown >= 0 ? '+' : ''}${grown.toFixed(0)} MiB); ${r.workerRecycles} workers recycled`);
});

test('workerRecycleHeapMb: 128 by default, 0 turns recycling off, 16384 at most', (t) => {
  t.is(resolveRuntimeOptions({}).workerRecycleHeapMb, 128);
  t.is(resolveRuntimeOptions({ workerRecycleHeapMb: 0 }).workerRecycleHeapMb, 0);
  t.is(resolveRuntimeOptions({ workerRecycleHeapMb: 16_384 }).workerRecycleHeapMb, 16_384);
  for (const bad of [-1, 16_385, 1.5]) {
    const e = t.throws(() => resolveRuntimeOptions({ workerRecycleHeapMb: bad }));
    t.true(isPlughostError(e, 'INVALID_ARGUMENT'), String(e));
    t.regex(e!.message, /^invalid runtime options: workerRecycleHeapMb: /);
  }
});

test.serial('a call that leaves its worker holding more than workerRecycleHeapMb over its start recycles the worker; under it, the worker stays', async (t) => {
  // describe answers 24 names of 1 MiB each (with no args): the worker holds them (and more) when the call ends
  const heavy = await buildFixture('amplify', (w) => w.replace('(global $names i32 (i32.const 1048576))', '(global $names i32 (i32.const 24))').replace('(global $pairs i32 (i32.const 1048576))', '(global $pairs i32 (i32.const 0))'));
  const names = async (m: Awaited<ReturnType<typeof manager>>) => (await (await m.load(heavy)).describe()).map((f) => f.name?.length);

  const under = await manager(t); // 128 MiB
  t.deepEqual(await names(under), new Array(24).fill(MiB));
  t.is(under.stats().workerRecycles, 0);

  const over = await manager(t, { workerRecycleHeapMb: 8 });
  const before = over.workers.map((w) => w.id);
  t.deepEqual(await names(over), new Array(24).fill(MiB));
  t.true(over.stats().workerRecycles >= 1);
  t.true(await waitFor(() => over.stats().workersRetiring === 0, 10_000), 'the recycled worker stops');
  t.is(over.stats().workers, 2);
  t.notDeepEqual(over.workers.map((w) => w.id), before, 'a fresh worker took its place');
  t.is(over.stats().workerRestarts, 0, 'a recycle is not a restart');
  // and the next calls are served, by fresh workers
  t.deepEqual(await (await over.load(await fixture('echo'))).invoke(ctx(), undefined, new Uint8Array([7])), { ok: true, value: new Uint8Array([7]) });
});
