// The runtime's costs with no gRPC, measured side by side in one process: a warm call
// through the Runtime API (sequential and 16 in flight) against the same guest called
// in-thread through jco with no worker; new-controller time; first call of a freshly
// loaded module; RSS per idle controller and for 1,000 idle controllers over 50 modules;
// KV get/set cost inside a call and committed write-calls/s, grouped vs per-call commits.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileComponent } from '../src/component/load.js';
import { LmdbKvStore } from '../src/kv/lmdb-store.js';
import type { InvocationContext } from '../src/runtime/context.js';
import { RuntimeManager } from '../src/runtime/manager.js';
import { fixture, withCustomSection } from '../test/fixtures/build.js';
import { median, perCallUs, pipelinedUs } from './stats.js';

const ctx: InvocationContext = { subject: 'bench', tenant: 'bench', kvAccess: 'write' };
const args = new Uint8Array(64);

export interface RuntimeBenchOptions {
  rounds: number;
  calls: number;
  quick: boolean;
  log(line: string): void;
}

async function inThreadEcho(): Promise<(a: Uint8Array) => unknown> {
  const compiled = await compileComponent(await fixture('echo'), { maxMemoryBytes: 16 << 20 });
  const glue = new Function(compiled.glue)() as { instantiate: Function };
  const instance = glue.instantiate((n: string) => compiled.coreModules[n], { 'plughost:plugin/host': {} }) as { invoke(n: string | undefined, a: Uint8Array): Uint8Array };
  return (a) => instance.invoke(undefined, a);
}

async function callCosts(o: RuntimeBenchOptions): Promise<Record<string, number>> {
  const inThread = await inThreadEcho();
  const manager = await RuntimeManager.create({ workers: 2 });
  try {
    const echo = await manager.load(await fixture('echo'));
    const s = { inthread: [] as number[], seq: [] as number[], piped: [] as number[] };
    for (let r = 0; r < o.rounds; r++) {
      s.inthread.push(await perCallUs(o.calls, () => inThread(args)));
      s.seq.push(await perCallUs(o.calls, () => echo.invoke(ctx, undefined, args)));
      s.piped.push(await pipelinedUs(o.calls, 16, () => echo.invoke(ctx, undefined, args)));
    }
    o.log(`  in-thread vs Runtime API: ${o.rounds} rounds of ${o.calls} calls`);

    const created: number[] = [];
    for (let i = 0; i < (o.quick ? 10 : 30); i++) {
      echo.evictIdle(Date.now() + 1);
      const t = performance.now();
      await echo.invoke(ctx, undefined, args);
      created.push(performance.now() - t);
    }
    // a distinct custom section makes a new hash with the same behaviour: compile + controller + call
    const first: number[] = [];
    for (let i = 0; i < (o.quick ? 5 : 10); i++) {
      const unique = withCustomSection(await fixture('counter'), `bench-${i}-${Date.now()}`);
      const t = performance.now();
      const rt = await manager.load(unique);
      await rt.invoke(ctx, undefined, args);
      first.push(performance.now() - t);
    }
    return {
      inthread_call_us: median(s.inthread),
      runtime_call_us: median(s.seq),
      runtime_pipelined_call_us: median(s.piped),
      new_controller_ms: median(created),
      runtime_cold_first_call_ms: median(first),
    };
  } finally {
    await manager.close();
  }
}

/** RSS of idle controllers: `modules` distinct modules with `perModule` controllers each. */
async function idleRss(modules: number, perModule: number): Promise<{ kib: number; live: number }> {
  const manager = await RuntimeManager.create({ workers: 2, maxControllers: 13_000 });
  try {
    const echo = await fixture('echo');
    globalThis.gc?.();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < modules; i++) {
      const rt = await manager.load(withCustomSection(echo, `idle-${i}`));
      // perModule calls at once, none idle yet: each gets a controller of its own
      await Promise.all(Array.from({ length: perModule }, () => rt.invoke(ctx, undefined, args)));
    }
    const live = manager.stats().liveControllers;
    return { kib: (process.memoryUsage().rss - before) / 1024, live };
  } finally {
    await manager.close();
  }
}

// KV inside a call: a read-only `get` and the guest's `fail` (get + set, then err: rolled
// back, no commit) against the echo call, alternately; the durable commit is `incr`
// (get + set, committed) minus `fail`. Then committed write-calls/s, 32 in flight over 32
// tenants (no lock queueing), grouped commits vs one fsync per commit.
async function kvCosts(o: RuntimeBenchOptions, commitMode: 'grouped' | 'per-call') {
  const dir = mkdtempSync(join(tmpdir(), 'plughost-bench-'));
  const store = new LmdbKvStore({ path: dir, commitMode });
  const m = await RuntimeManager.create({ workers: 2, store });
  try {
    const kv = await m.load(await fixture('kv'), { name: 'kv' });
    const echo = await m.load(await fixture('echo'));
    const n = o.quick ? 300 : 1000;
    const key = new TextEncoder().encode('n');
    const s = { echo: [] as number[], get: [] as number[], getSet: [] as number[], write: [] as number[] };
    for (let r = 0; r < o.rounds; r++) {
      s.echo.push(await perCallUs(n, () => echo.invoke(ctx, undefined, args)));
      s.get.push(await perCallUs(n, () => kv.invoke({ ...ctx, kvAccess: 'read' }, 'get', key)));
      s.getSet.push(await perCallUs(n, () => kv.invoke(ctx, 'fail', args)));
      s.write.push(await perCallUs(n, () => kv.invoke(ctx, undefined, args)));
    }
    let i = 0;
    const perWrite = await pipelinedUs(n * 2, 32, () => kv.invoke({ ...ctx, tenant: `t${i++ % 32}` }, undefined, args));
    return {
      callUs: median(s.write),
      getUs: median(s.get) - median(s.echo),
      getSetUs: median(s.getSet) - median(s.echo),
      commitUs: median(s.write) - median(s.getSet),
      writesPerSec: 1e6 / perWrite,
    };
  } finally {
    await m.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runtimeBench(o: RuntimeBenchOptions): Promise<Record<string, number>> {
  const rows = await callCosts(o);
  const one = await idleRss(o.quick ? 60 : 200, 2);
  rows.idle_controller_kib = one.kib / one.live;
  o.log(`  idle RSS: ${one.live} controllers of ${o.quick ? 60 : 200} modules`);
  const many = await idleRss(50, 20);
  rows.idle_1000_controllers_mib = many.kib / 1024;
  rows.idle_1000_controllers_live = many.live;
  o.log(`  idle RSS: ${many.live} controllers of 50 modules`);
  const grouped = await kvCosts(o, 'grouped');
  const perCall = await kvCosts(o, 'per-call');
  rows.kv_call_us = grouped.callUs;
  rows.kv_get_in_call_us = grouped.getUs;
  rows.kv_get_set_in_call_us = grouped.getSetUs;
  rows.kv_durable_commit_us = grouped.commitUs;
  rows.kv_writes_per_sec_grouped = grouped.writesPerSec;
  rows.kv_writes_per_sec_per_call = perCall.writesPerSec;
  o.log('  KV: grouped and per-call commits');
  return rows;
}
