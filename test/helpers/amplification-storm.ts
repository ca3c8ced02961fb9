// A storm of amplification calls against a runtime of its own, run as a child process by
// test/memory-recycle.test.ts so that the RSS it reports is the runtime's alone (run with
// --expose-gc). Argument: JSON { store, workerRecycleHeapMb }. Prints one JSON line: the RSS
// (MiB) idle, at the peak and after the storm (once the recycled workers have stopped), the
// outcome of every call, and the worker restarts and recycles.
import { fixture } from '../fixtures/build.js';
import { LmdbKvStore } from '../../src/kv/lmdb-store.js';
import { RuntimeManager } from '../../src/runtime/manager.js';
import { isPlughostError } from '../../src/errors.js';
import { waitFor } from './wait.js';

const { store: path, workerRecycleHeapMb } = JSON.parse(process.argv[2]!) as { store: string; workerRecycleHeapMb: number };
const gc = (globalThis as { gc?: () => void }).gc!;
const MiB = 1 << 20;
const rss = () => process.memoryUsage().rss / MiB;
const batch = (n: number, size: number) => new Uint8Array(new Uint32Array([n, size]).buffer);
const ctx = { subject: 'storm', tenant: 'storm', kvAccess: 'write' as const };

const store = new LmdbKvStore({ path });
const m = await RuntimeManager.create({ workers: 2, store, workerRecycleHeapMb });
try {
  const amplify = await m.load(await fixture('amplify'), { name: 'amplify', limits: { maxExecutionMs: 60_000 } });
  const echo = await m.load(await fixture('echo'), { name: 'echo' });
  // idle: both workers started and have run both modules
  await Promise.all(Array.from({ length: 8 }, () => amplify.invoke(ctx, 'get-batch', batch(10, 16))));
  await Promise.all(Array.from({ length: 8 }, () => echo.invoke(ctx, undefined, new Uint8Array(8))));
  gc();
  const idle = rss();

  // 4 callers, 10 calls each: a million names of one 1 MiB string, batches of 1000 keys or
  // values all pointing at one 1 MiB string, and a batch of 5000 keys (over maxBatchItems)
  const jobs: [string, Uint8Array][] = [['describe', new Uint8Array()], ['get-batch', batch(1000, MiB)], ['set-batch', batch(1000, MiB)], ['del-batch', batch(1000, MiB)], ['get-batch', batch(5000, 16)]];
  const outcomes: Record<string, number> = {};
  let peak = idle;
  await Promise.all([0, 1, 2, 3].map(async (caller) => {
    for (let k = 0; k < 10; k++) {
      const [fn, args] = jobs[(k + caller) % jobs.length]!;
      let outcome: string;
      try {
        const r = fn === 'describe' ? await amplify.describe() : await amplify.invoke(ctx, fn, args);
        outcome = Array.isArray(r) ? 'described' : r.ok ? 'ok' : r.guestError;
      } catch (e) {
        outcome = isPlughostError(e) ? `${e.code}${/lift more than/.test(e.message) ? ' (lift budget)' : ''}` : String(e);
      }
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      peak = Math.max(peak, rss());
    }
  }));
  const stopped = await waitFor(() => m.stats().workersRetiring === 0, 30_000);
  gc();
  const { workerRestarts, workerRecycles } = m.stats();
  process.stdout.write(`${JSON.stringify({ idle, peak, after: rss(), stopped, outcomes, workerRestarts, workerRecycles })}\n`);
} finally {
  await m.close();
  store.close();
}
