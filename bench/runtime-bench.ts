// The runtime's costs with no gRPC, measured side by side in one process: a warm call
// through the Runtime API (sequential and 16 in flight) against the same guest called
// in-thread through jco with no worker; new-controller time; first call of a freshly
// loaded module; RSS per idle controller and for 1,000 idle controllers over 50 modules;
// KV get/set cost inside a call and committed write-calls/s, grouped vs per-call commits.
// Every measured call is checked (the echo's value is its args, the counter's and the KV
// guest's are what they must be): a throw, a guest error or a wrong value is counted as an
// error in `o.errors` under its workload, never as a call that completed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileComponent } from '../src/component/load.js';
import { LmdbKvStore } from '../src/kv/lmdb-store.js';
import type { InvocationContext } from '../src/runtime/context.js';
import { RuntimeManager } from '../src/runtime/manager.js';
import { fixture, withCustomSection } from '../test/fixtures/build.js';
import { answers, answersGuestError, answersValue, checked, median, perCallUs, pipelinedUs, returns, type Answer, type ErrorTally } from './stats.js';

const ctx: InvocationContext = { subject: 'bench', tenant: 'bench', kvAccess: 'write' };
const args = new Uint8Array(64).map((_, i) => i);
const echoes = answers(args);
const u32 = (v: Uint8Array) => new DataView(v.buffer, v.byteOffset, v.byteLength).getUint32(0, true);
/** The counter guest's first call on a new controller: count 1 (u32 LE). */
const countsOne = answersValue((v) => v.length === 4 && u32(v) === 1);
/** The KV guest's `get` of a u32: [0] (absent) or [1, u32 LE]. */
const getsU32 = answersValue((v) => (v.length === 1 && v[0] === 0) || (v.length === 5 && v[0] === 1));
/** The KV guest's `incr`, one tenant, one call at a time: each answer one more than the last (u32 LE). */
function incrementsByOne() {
  let last: number | undefined;
  return answersValue((v) => {
    if (v.length !== 4) return false;
    const n = u32(v);
    const ok = last === undefined || n === last + 1;
    last = n;
    return ok;
  });
}
const isU32 = answersValue((v) => v.length === 4);

export interface RuntimeBenchOptions {
  rounds: number;
  calls: number;
  quick: boolean;
  log(line: string): void;
  /** Where each workload's calls and wrong answers are counted. */
  errors: ErrorTally;
}

/** Calls made, checked and not timed, before a workload's rounds. */
const WARM_UP_CALLS = 20_000;

async function inThreadEcho(): Promise<(a: Uint8Array) => unknown> {
  const compiled = await compileComponent(await fixture('echo'), { maxMemoryBytes: 16 << 20 });
  const glue = new Function(compiled.glue)() as { instantiate: Function };
  const instance = glue.instantiate((n: string) => compiled.coreModules[n], { 'plughost:plugin/host': {} }) as { invoke(n: string | undefined, a: Uint8Array): Uint8Array };
  return (a) => instance.invoke(undefined, a);
}

/** Times one call (or a few steps) `times` times, checking each; a wrong one is counted, not timed. */
async function timedOnce(o: RuntimeBenchOptions, workload: string, times: number, before: () => void, run: () => Promise<Answer>, check: (r: Answer) => boolean): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < times; i++) {
    before();
    const t = performance.now();
    const wrong = await checked(run, check);
    const took = performance.now() - t;
    if (wrong === undefined) ms.push(took);
    o.errors.add(workload, 1, wrong === undefined ? 0 : 1, wrong);
  }
  return ms;
}

async function callCosts(o: RuntimeBenchOptions): Promise<Record<string, number>> {
  const inThread = await inThreadEcho();
  const manager = await RuntimeManager.create({ workers: 2 });
  try {
    const echo = await manager.load(await fixture('echo'));
    const s = { inthread: [] as number[], seq: [] as number[], piped: [] as number[] };
    // warm: the first few thousand calls run cold code on both threads (V8 tiers it up)
    o.errors.timed('Runtime API echo, warm-up', await perCallUs(WARM_UP_CALLS, () => echo.invoke(ctx, undefined, args), echoes));
    o.errors.timed('in-thread echo, warm-up', await perCallUs(WARM_UP_CALLS, () => inThread(args), returns(args)));
    for (let r = 0; r < o.rounds; r++) {
      s.inthread.push(o.errors.timed('in-thread echo (jco, no worker)', await perCallUs(o.calls, () => inThread(args), returns(args))));
      s.seq.push(o.errors.timed('Runtime API echo, sequential', await perCallUs(o.calls, () => echo.invoke(ctx, undefined, args), echoes)));
      s.piped.push(o.errors.timed('Runtime API echo, 16 in flight', await pipelinedUs(o.calls, 16, () => echo.invoke(ctx, undefined, args), echoes)));
    }
    o.log(`  in-thread vs Runtime API: ${o.rounds} rounds of ${o.calls} calls`);

    const created = await timedOnce(o, 'new controller + echo call', o.quick ? 10 : 30, () => echo.evictIdle(Date.now() + 1), () => echo.invoke(ctx, undefined, args), echoes);
    // a distinct custom section makes a new hash with the same behaviour: compile + controller + call
    const counter = await fixture('counter');
    let unique = counter;
    let i = 0;
    const first = await timedOnce(o, 'load + first call (counter)', o.quick ? 5 : 10, () => (unique = withCustomSection(counter, `bench-${i++}-${Date.now()}`)), async () => {
      const rt = await manager.load(unique);
      return rt.invoke(ctx, undefined, args);
    }, countsOne);
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
async function idleRss(o: RuntimeBenchOptions, modules: number, perModule: number): Promise<{ kib: number; live: number }> {
  const manager = await RuntimeManager.create({ workers: 2, maxControllers: 13_000 });
  try {
    const echo = await fixture('echo');
    globalThis.gc?.();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < modules; i++) {
      const rt = await manager.load(withCustomSection(echo, `idle-${i}`));
      // perModule calls at once, none idle yet: each gets a controller of its own
      const wrong = await Promise.all(Array.from({ length: perModule }, () => checked(() => rt.invoke(ctx, undefined, args), echoes)));
      const bad = wrong.filter((w) => w !== undefined);
      o.errors.add(`idle RSS: echo calls, ${perModule} at once per module`, perModule, bad.length, bad[0]);
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
    const w = (name: string) => `KV (${commitMode} commits): ${name}`;
    // `fail` increments and then errs, rolled back: so every `incr` is one more than the last
    const increments = incrementsByOne();
    o.errors.timed(w('echo, warm-up'), await perCallUs(WARM_UP_CALLS / 2, () => echo.invoke(ctx, undefined, args), echoes));
    o.errors.timed(w('get, warm-up'), await perCallUs(WARM_UP_CALLS / 2, () => kv.invoke({ ...ctx, kvAccess: 'read' }, 'get', key), getsU32));
    for (let r = 0; r < o.rounds; r++) {
      s.echo.push(o.errors.timed(w('echo'), await perCallUs(n, () => echo.invoke(ctx, undefined, args), echoes)));
      s.get.push(o.errors.timed(w('get'), await perCallUs(n, () => kv.invoke({ ...ctx, kvAccess: 'read' }, 'get', key), getsU32)));
      s.getSet.push(o.errors.timed(w('fail (get + set, then err)'), await perCallUs(n, () => kv.invoke(ctx, 'fail', args), answersGuestError)));
      s.write.push(o.errors.timed(w('incr, sequential'), await perCallUs(n, () => kv.invoke(ctx, undefined, args), increments)));
    }
    let i = 0;
    const perWrite = o.errors.timed(w('incr, 32 in flight over 32 tenants'), await pipelinedUs(n * 2, 32, () => kv.invoke({ ...ctx, tenant: `t${i++ % 32}` }, undefined, args), isU32));
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

// One `run` inside a call: the run guest answering its args itself (`echo`) against the
// same guest running another module's `echo` with them (`relay`), alternately; the
// difference is what the nested call costs (the bridge round trips, its controller and
// the worker's second entry into a guest).
export async function runCosts(o: RuntimeBenchOptions): Promise<{ callUs: number; runUs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'plughost-bench-'));
  const store = new LmdbKvStore({ path: dir });
  const m = await RuntimeManager.create({ workers: 2, store });
  try {
    const bytes = await fixture('run');
    const front = await m.load(bytes, { name: 'front' });
    const back = await m.load(withCustomSection(bytes, 'back'), { name: 'back' });
    const payload = 'x'.repeat(64);
    const relayArgs = new TextEncoder().encode(`${back.hash}|echo|${payload}`);
    const echoArgs = new TextEncoder().encode(payload);
    const answersPayload = answersValue((v) => v.length === 64 && new TextDecoder().decode(v) === payload);
    const n = o.quick ? 1000 : 5000;
    // no KV: the cost of the nested call itself, not of the writer's lock and commit path
    const noKv: InvocationContext = { ...ctx, kvAccess: 'none' };
    o.errors.timed('run: relay, warm-up', await perCallUs(WARM_UP_CALLS / 4, () => front.invoke(noKv, 'relay', relayArgs), answersPayload));
    const s = { echo: [] as number[], relay: [] as number[] };
    for (let r = 0; r < o.rounds; r++) {
      s.echo.push(o.errors.timed('run guest: echo (no run)', await perCallUs(n, () => front.invoke(noKv, 'echo', echoArgs), answersPayload)));
      s.relay.push(o.errors.timed('run guest: relay (one run of echo)', await perCallUs(n, () => front.invoke(noKv, 'relay', relayArgs), answersPayload)));
    }
    o.log(`  run: ${o.rounds} rounds of ${n} calls, with and without one nested call`);
    return { callUs: median(s.relay), runUs: median(s.relay) - median(s.echo) };
  } finally {
    await m.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runtimeBench(o: RuntimeBenchOptions): Promise<Record<string, number>> {
  const rows = await callCosts(o);
  const run = await runCosts(o);
  rows.run_call_us = run.callUs;
  rows.run_in_call_us = run.runUs;
  const one = await idleRss(o, o.quick ? 60 : 200, 2);
  rows.idle_controller_kib = one.kib / one.live;
  o.log(`  idle RSS: ${one.live} controllers of ${o.quick ? 60 : 200} modules`);
  const many = await idleRss(o, 50, 20);
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
