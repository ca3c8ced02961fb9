// Runtime and KV costs, measured side by side in one run (these machines are noisy):
// a warm call through the Runtime API (sequential and pipelined) against the same
// guest called in-thread through jco with no worker; new-controller time; first call
// of a freshly loaded module; RSS per idle controller; KV get+set cost inside a call;
// committed write-invocations per second with grouped commits vs one commit per call.
// Usage: npm run bench [-- --quick] [-- --json]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileComponent } from '../src/component/load.js';
import { LmdbKvStore } from '../src/kv/lmdb-store.js';
import { RuntimeManager } from '../src/runtime/manager.js';
import type { InvocationContext } from '../src/runtime/context.js';
import { fixture, withCustomSection } from '../test/fixtures/build.js';

const quick = process.argv.includes('--quick');
const json = process.argv.includes('--json');
const ROUNDS = quick ? 3 : 5;
const CALLS = quick ? 2000 : 10000;
const ctx: InvocationContext = { subject: 'bench', tenant: 'bench', kvAccess: 'write' };
const args = new Uint8Array(64);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function perCallUs(n: number, run: () => Promise<unknown> | unknown): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < n; i++) await run();
  return ((performance.now() - t) * 1000) / n;
}
async function pipelinedUs(n: number, depth: number, run: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  let started = 0;
  await Promise.all(Array.from({ length: depth }, async () => {
    while (started++ < n) await run();
  }));
  return ((performance.now() - t) * 1000) / n;
}

// in-thread floor: the echo guest through jco glue on this thread, no worker
const echoBytes = await fixture('echo');
const compiled = await compileComponent(echoBytes, { maxMemoryBytes: 16 << 20 });
const inThread = (new Function(compiled.glue)() as { instantiate: Function }).instantiate(
  (n: string) => compiled.coreModules[n], { 'plughost:plugin/host': {} }) as { invoke(n: string | undefined, a: Uint8Array): Uint8Array };

const manager = await RuntimeManager.create({ workers: 2 });
const echo = await manager.load(echoBytes);
const rows: Record<string, number> = {};
const samples: Record<string, number[]> = { inthread: [], seq: [], piped: [] };
for (let r = 0; r < ROUNDS; r++) {
  samples.inthread!.push(await perCallUs(CALLS, () => inThread.invoke(undefined, args)));
  samples.seq!.push(await perCallUs(CALLS, () => echo.invoke(ctx, undefined, args)));
  samples.piped!.push(await pipelinedUs(CALLS, 16, () => echo.invoke(ctx, undefined, args)));
}
rows.inthread_call_us = median(samples.inthread!);
rows.runtime_call_us = median(samples.seq!);
rows.runtime_pipelined_call_us = median(samples.piped!);

// new controller: evict and call again, many times
const created: number[] = [];
for (let i = 0; i < (quick ? 10 : 30); i++) {
  echo.evictIdle(Date.now() + 1);
  const t = performance.now();
  await echo.invoke(ctx, undefined, args);
  created.push(performance.now() - t);
}
rows.new_controller_ms = median(created);

// first call of a freshly loaded module (a new hash each time: compile + controller + call)
const first: number[] = [];
for (let i = 0; i < (quick ? 5 : 10); i++) {
  const t = performance.now();
  // a distinct custom section makes a distinct module hash without changing behaviour
  const unique = withCustomSection(await fixture('counter'), `bench-${i}-${Date.now()}`);
  const rt = await manager.load(unique);
  await rt.invoke(ctx, undefined, args);
  first.push(performance.now() - t);
}
rows.cold_first_call_ms = median(first);

// RSS per idle controller: 200 distinct modules, one idle controller each per worker
globalThis.gc?.();
const rssBefore = process.memoryUsage().rss;
const many = quick ? 60 : 200;
for (let i = 0; i < many; i++) {
  const rt = await manager.load(withCustomSection(echoBytes, `idle-${i}`));
  await Promise.all([rt.invoke(ctx, undefined, args), rt.invoke(ctx, undefined, args)]);
}
const live = manager.stats().liveControllers;
rows.idle_controller_kib = (process.memoryUsage().rss - rssBefore) / 1024 / live;
await manager.close();

// KV. Inside a call: a read-only `get` call and the guest's `fail` (get + set, then err,
// so rolled back: no commit) against the echo call, measured alternately; the commit is
// `incr` (get + set, committed durably) minus `fail`. Then committed write-invocations per
// second, 32 in flight over 32 tenants (no lock queueing), grouped vs one fsync per commit.
async function kvRun(commitMode: 'grouped' | 'per-call') {
  const dir = mkdtempSync(join(tmpdir(), 'plughost-bench-'));
  const store = new LmdbKvStore({ path: dir, commitMode });
  const m = await RuntimeManager.create({ workers: 2, store });
  try {
    const kv = await m.load(await fixture('kv'), { name: 'kv' });
    const echoRt = await m.load(echoBytes);
    const n = quick ? 300 : 1000;
    const key = new TextEncoder().encode('n');
    const s: Record<string, number[]> = { echo: [], get: [], getSet: [], write: [] };
    for (let r = 0; r < ROUNDS; r++) {
      s.echo!.push(await perCallUs(n, () => echoRt.invoke(ctx, undefined, args)));
      s.get!.push(await perCallUs(n, () => kv.invoke({ ...ctx, kvAccess: 'read' }, 'get', key)));
      s.getSet!.push(await perCallUs(n, () => kv.invoke(ctx, 'fail', args)));
      s.write!.push(await perCallUs(n, () => kv.invoke(ctx, undefined, args)));
    }
    let i = 0;
    const t = performance.now();
    await pipelinedUs(n * 2, 32, () => kv.invoke({ ...ctx, tenant: `t${i++ % 32}` }, undefined, args));
    return {
      callUs: median(s.write!),
      getUs: median(s.get!) - median(s.echo!),
      getSetUs: median(s.getSet!) - median(s.echo!),
      commitUs: median(s.write!) - median(s.getSet!),
      writesPerSec: (n * 2) / ((performance.now() - t) / 1000),
    };
  } finally {
    await m.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
const grouped = await kvRun('grouped');
const perCall = await kvRun('per-call');
rows.kv_call_us = grouped.callUs;
rows.kv_get_in_call_us = grouped.getUs;
rows.kv_get_set_in_call_us = grouped.getSetUs;
rows.kv_durable_commit_us = grouped.commitUs;
rows.kv_writes_per_sec_grouped = grouped.writesPerSec;
rows.kv_writes_per_sec_per_call = perCall.writesPerSec;


const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(2));
console.log(`plughost runtime bench (${quick ? 'quick' : 'full'}; ${ROUNDS} rounds, medians; node ${process.version})`);
for (const [k, v] of Object.entries(rows)) console.log(`  ${k.padEnd(30)} ${fmt(v)}`);
console.log(`  ratio runtime/in-thread          ${(rows.runtime_call_us / rows.inthread_call_us).toFixed(1)}x`);
console.log(`  ratio grouped/per-call commits   ${(rows.kv_writes_per_sec_grouped / rows.kv_writes_per_sec_per_call).toFixed(1)}x`);
if (json) console.log(JSON.stringify(Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, Number(fmt(v))]))));
