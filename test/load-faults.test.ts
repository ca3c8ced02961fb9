// Guest faults under load: 16 callers for 20 s over healthy calls (echo, a KV counter) and
// faulty ones (trap, infinite loop, memory bomb). Every call gets exactly one answer with
// the right outcome, healthy calls keep completing, nothing leaks, no increment is lost.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { fixture } from './fixtures/build.js';
import { readU32 } from './helpers/runtime.js';
import { clients, push, startPlughost } from './helpers/service.js';
import { percentile } from '../src/util/stats.js';

const SECONDS = Number(process.env.PLUGHOST_SOAK_SECONDS ?? 20);
const enc = (s: string) => new TextEncoder().encode(s);

type Kind = 'echo' | 'incr' | 'trap' | 'loop' | 'bomb';
const EXPECTED: Record<Kind, Code | 'OK'> = { echo: 'OK', incr: 'OK', trap: Code.Aborted, loop: Code.DeadlineExceeded, bomb: Code.ResourceExhausted };

test.serial(`faults under load: 16 callers for ${SECONDS} s, every call answered once and rightly, healthy calls keep going, nothing leaks`, async (t) => {
  t.timeout((SECONDS + 90) * 1000);
  const host = await startPlughost(t, { limits: { maxMemoryBytes: 32 << 20 }, acquireTimeoutMs: 30_000 });
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'echo', '1.0.0', await fixture('echo'));
  await push(c, 'kv', '1.0.0', await fixture('kv'));
  await push(c, 'faults', '1.0.0', await fixture('faults'), { limits: { maxExecutionMs: 300 } });

  async function call(kind: Kind): Promise<{ code: Code | 'OK'; ms: number; message?: string }> {
    const t0 = performance.now();
    const req = kind === 'echo' ? { module: 'echo', args: enc('ping') } : kind === 'incr' ? { module: 'kv' } : { module: 'faults', function: kind };
    try {
      const r = await c.plugins.invoke(req, { timeoutMs: 30_000 });
      if (kind === 'echo' && new TextDecoder().decode(r.result.value as Uint8Array) !== 'ping') throw new Error('echo answered something else');
      return { code: 'OK', ms: performance.now() - t0 };
    } catch (e) {
      if (!(e instanceof ConnectError)) throw e;
      return { code: e.code, ms: performance.now() - t0, message: e.rawMessage };
    }
  }

  /** `healthy` callers run echo/incr; the others cycle through the faults. */
  async function phase(seconds: number, faulty: number) {
    const wrong: string[] = [];
    const healthyMs: number[] = [];
    let increments = 0;
    let calls = 0;
    const counts: Record<string, number> = {};
    const end = Date.now() + seconds * 1000;
    await Promise.all(Array.from({ length: 16 }, async (_, i) => {
      const cycle: Kind[] = i < 16 - faulty ? (i % 2 ? ['echo', 'incr'] : ['incr', 'echo']) : ['trap', 'loop', 'bomb', 'trap'];
      for (let n = 0; Date.now() < end; n++) {
        const kind = cycle[n % cycle.length]!;
        const r = await call(kind);
        calls++;
        counts[kind] = (counts[kind] ?? 0) + 1;
        if (r.code !== EXPECTED[kind]) wrong.push(`${kind}: ${r.code === 'OK' ? 'OK' : Code[r.code]} ${r.message ?? ''}`);
        if (kind === 'incr' && r.code === 'OK') increments++;
        if (kind === 'echo' || kind === 'incr') healthyMs.push(r.ms);
      }
    }));
    return { wrong, healthyMs, increments, calls, counts };
  }

  const rssBefore = process.memoryUsage().rss;
  const calm = await phase(Math.min(5, SECONDS / 4), 0);
  const rssAfterCalm = process.memoryUsage().rss;
  const storm = await phase(SECONDS, 4);
  t.deepEqual(calm.wrong, []);
  t.deepEqual(storm.wrong.slice(0, 10), [], `${storm.wrong.length} wrong outcomes: ${storm.wrong.slice(0, 3).join('; ')}`);
  t.true(storm.counts.loop! > 5 && storm.counts.bomb! > 5 && storm.counts.trap! > 5, JSON.stringify(storm.counts));

  // every successful increment, and only those, is in the counter
  const n = readU32(((await c.plugins.invoke({ module: 'kv', function: 'get', args: enc('n') })).result.value as Uint8Array).subarray(1));
  t.is(n, calm.increments + storm.increments);

  // pools settle back: nothing in use, nobody waiting, the workers all there. No module had
  // more than its 16 callers at once; a call takes a new controller on a free worker rather
  // than an idle one on a busy worker (module-pool.ts takeIdle), so each worker may keep up
  // to 16 of a module's, and no more (the pool caps, 64 a module, would hide a leak)
  const stats = host.manager.stats();
  for (const m of ['echo', 'kv', 'faults']) {
    const p = (await c.modules.describeModule({ module: m })).pool!;
    t.is(p.inUse, 0, `${m} in use`);
    t.is(p.waiters, 0, `${m} waiters`);
    t.true(p.idle <= 16 * stats.workers, `${m} idle ${p.idle}`);
  }
  t.is(stats.workers, 2, 'as many workers as before the storm');
  t.is(host.manager.workers.filter((w) => w.alive).length, stats.workers);
  t.true(stats.workerRestarts >= storm.counts.loop!, `a worker was replaced for each loop (${stats.workerRestarts} restarts)`);
  t.true(stats.liveControllers <= 3 * 16 * stats.workers, `${stats.liveControllers} live controllers`);
  globalThis.gc?.();
  const rssAfter = process.memoryUsage().rss;
  // measured on a quiet run: the storm (~60 workers replaced, ~19k calls) adds 49 MiB over
  // the calm phase, which the allocator keeps; a leak per call or per worker would add far
  // more, and the bound leaves room for a busy machine
  t.true(rssAfter - rssAfterCalm < 256 << 20, `RSS grew ${((rssAfter - rssAfterCalm) / 2 ** 20).toFixed(0)} MiB over the calm phase`);

  const p99 = (xs: number[]) => percentile(xs, 99).toFixed(1);
  t.log(`calm: ${calm.calls} calls, healthy p99 ${p99(calm.healthyMs)} ms; storm: ${storm.calls} calls ${JSON.stringify(storm.counts)}, healthy p99 ${p99(storm.healthyMs)} ms, ` +
    `${stats.workerRestarts} worker restarts, RSS ${((rssAfterCalm - rssBefore) / 2 ** 20).toFixed(0)} MiB over the start after the calm phase and ${((rssAfter - rssAfterCalm) / 2 ** 20).toFixed(0)} MiB more after the storm, counter ${n}`);
});
