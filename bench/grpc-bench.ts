// gRPC workloads: plughost against a bare grpc-js echo server, both in child processes,
// loaded by a third child (the load client), alternating ours and the baseline (A B A B)
// so that both see the same noise. Also the cold path: push a new module, then call it.
// Every call is checked (echo: its args back; hash: the FNV-1a of the args; KV: a value;
// cold path: the counter's first count): wrong answers and failures are counted in
// `o.errors` per workload and are not in the calls/s.
import { createClient } from '@connectrpc/connect';
import { Http2SessionManager, createGrpcTransport } from '@connectrpc/connect-node';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ModuleService } from '../gen/plughost/v1/module_pb.js';
import { PluginService } from '../gen/plughost/v1/plugin_pb.js';
import { fixture, withCustomSection } from '../test/fixtures/build.js';
import { loadArgs, type LoadJob, type LoadResult } from '../src/cli/load.js';
import { startServerProcess } from './servers.js';
import { describe, median, type ErrorTally } from './stats.js';

export interface GrpcBenchOptions {
  rounds: number;
  seconds: number;
  quick: boolean;
  log(line: string): void;
  /** Where each workload's calls and wrong answers are counted. */
  errors: ErrorTally;
}

export interface Pair {
  name: string;
  ours: LoadResult[];
  bare: LoadResult[];
}

export interface GrpcBenchResult {
  pairs: Pair[];
  /** Batch streams of 64 B rows, echo guest (per-row invoke), by rows per batch. */
  batchCurve: { size: number; pair: Pair }[];
  /** Batch streams of BATCH_ROWS rows through each batch guest (ours only; the bare server's figure is batchCurve's). */
  batchGuests: { name: string; module: string; entry: boolean; runs: LoadResult[] }[];
  solo: { name: string; runs: LoadResult[] }[];
  coldFirstCallMs: number;
  pushMs: number;
}

export const medianOps = (rs: LoadResult[]) => median(rs.map((r) => r.opsPerSec));
/** The median of each pair's ratio (ours / bare), each pair run back to back. */
export const pairRatio = (p: Pair) => median(p.ours.map((o, i) => o.opsPerSec / p.bare[i]!.opsPerSec));
/** Errors over all the runs. */
export const sumErrors = (rs: LoadResult[]) => rs.reduce((n, r) => n + r.errors, 0);

/** Rows per batch of the batch-guest workloads (the issue's reference size). */
export const BATCH_ROWS = 1024;
/** Rows a batch stream keeps outstanding: four batches, and never fewer than an item stream's 64. */
const batchWindow = (size: number) => Math.max(64, 4 * size);

/** The hash guest's answer: 32-bit FNV-1a of the bytes, u32 LE. */
function fnv1a(bytes: Uint8Array): Uint8Array {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, h, true);
  return out;
}

function tally(o: GrpcBenchOptions, workload: string, r: LoadResult) {
  o.errors.add(workload, r.ops + r.errors, r.errors, r.firstError);
}

function loadClient() {
  const child = fork(fileURLToPath(new URL('./load-client.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    run: (job: LoadJob) =>
      new Promise<LoadResult>((resolve, reject) => {
        child.once('message', (m: { result?: LoadResult; error?: string }) => (m.result ? resolve(m.result) : reject(new Error(`load client: ${m.error}`))));
        child.send(job);
      }),
    close: async () => {
      child.disconnect();
      await exited;
    },
  };
}

async function coldPath(o: GrpcBenchOptions, address: string, token: string, times: number): Promise<{ pushMs: number; firstCallMs: number }> {
  const baseUrl = `http://${address}`;
  const sessionManager = new Http2SessionManager(baseUrl);
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors: [(next) => (req) => (req.header.set('authorization', `Bearer ${token}`), next(req))],
  });
  const modules = createClient(ModuleService, transport);
  const plugins = createClient(PluginService, transport);
  const counter = await fixture('counter');
  const push: number[] = [];
  const first: number[] = [];
  try {
    for (let i = 0; i < times; i++) {
      const bytes = withCustomSection(counter, `cold-${i}-${Date.now()}`);
      const t0 = performance.now();
      let t1 = t0;
      let wrong: string | undefined;
      try {
        await modules.pushModule((async function* () {
          yield { part: { case: 'manifest' as const, value: { name: `cold${i}`, version: '1.0.0' } } };
          yield { part: { case: 'chunk' as const, value: bytes } };
        })());
        t1 = performance.now();
        const r = await plugins.invoke({ module: `cold${i}` });
        // the counter's first call on a new module: count 1, u32 LE
        const v = r.result.case === 'value' ? r.result.value : undefined;
        if (!v || v.length !== 4 || new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true) !== 1) wrong = r.result.case === 'guestError' ? `guest error: ${r.result.value}` : describe(v);
      } catch (e) {
        wrong = describe(e, true);
      }
      const t2 = performance.now();
      o.errors.add('gRPC cold path: push, then first call (counter)', 1, wrong === undefined ? 0 : 1, wrong);
      if (wrong !== undefined) continue;
      push.push(t1 - t0);
      first.push(t2 - t0);
    }
  } finally {
    sessionManager.abort();
  }
  return { pushMs: median(push), firstCallMs: median(first) };
}

export async function grpcBench(o: GrpcBenchOptions): Promise<GrpcBenchResult> {
  const [bare, ours] = [await startServerProcess('bare'), await startServerProcess('plughost')];
  const client = loadClient();
  try {
    const job = (s: { address: string; token: string }, j: Omit<LoadJob, 'address' | 'token' | 'seconds'>): LoadJob => ({ ...j, address: s.address, token: s.token, seconds: o.seconds });
    // warm both servers and the client (JIT, connections, controllers)
    for (const s of [bare, ours]) tally(o, `gRPC warm-up (${s === bare ? 'bare' : 'plughost'})`, await client.run({ ...job(s, { mode: 'unary', concurrency: 16, bytes: 64, module: 'echo', expect: 'echo' }), seconds: 0.5 }));

    const workloads: { name: string; mode: LoadJob['mode']; concurrency: number; bytes: number }[] = [
      { name: 'unary c=1, 64 B', mode: 'unary', concurrency: 1, bytes: 64 },
      { name: 'unary c=16, 64 B', mode: 'unary', concurrency: 16, bytes: 64 },
      { name: 'unary c=64, 64 B', mode: 'unary', concurrency: 64, bytes: 64 },
      { name: 'stream, 64 B', mode: 'stream', concurrency: 64, bytes: 64 },
      { name: 'stream, 4 KiB', mode: 'stream', concurrency: 64, bytes: 4096 },
    ];
    const pairs: Pair[] = [];
    for (const w of workloads) {
      const pair: Pair = { name: w.name, ours: [], bare: [] };
      for (let r = 0; r < o.rounds; r++) {
        pair.bare.push(await client.run(job(bare, { ...w, module: 'echo', expect: 'echo' })));
        pair.ours.push(await client.run(job(ours, { ...w, module: 'echo', expect: 'echo' })));
        tally(o, `gRPC ${w.name} (bare)`, pair.bare.at(-1)!);
        tally(o, `gRPC ${w.name} (plughost)`, pair.ours.at(-1)!);
      }
      o.log(`  ${w.name}: ours ${medianOps(pair.ours).toFixed(0)}/s, bare ${medianOps(pair.bare).toFixed(0)}/s${sumErrors([...pair.ours, ...pair.bare]) ? `, ERRORS ${sumErrors(pair.ours)} ours / ${sumErrors(pair.bare)} bare` : ''}`);
      pairs.push(pair);
    }

    // batches of rows: the curve against the bare server, then each batch guest at BATCH_ROWS
    const batchCurve: GrpcBenchResult['batchCurve'] = [];
    for (const size of o.quick ? [1, 256, BATCH_ROWS] : [1, 16, 256, BATCH_ROWS, 4096]) {
      const pair: Pair = { name: `batch stream, ${size} rows of 64 B`, ours: [], bare: [] };
      const w = { mode: 'stream' as const, batch: size, concurrency: batchWindow(size), bytes: 64, module: 'echo', expect: 'echo' as const };
      for (let r = 0; r < o.rounds; r++) {
        pair.bare.push(await client.run(job(bare, w)));
        pair.ours.push(await client.run(job(ours, w)));
        tally(o, `gRPC ${pair.name} (bare)`, pair.bare.at(-1)!);
        tally(o, `gRPC ${pair.name} (plughost)`, pair.ours.at(-1)!);
      }
      o.log(`  ${pair.name}: ours ${medianOps(pair.ours).toFixed(0)} rows/s, bare ${medianOps(pair.bare).toFixed(0)} rows/s${sumErrors([...pair.ours, ...pair.bare]) ? `, ERRORS ${sumErrors(pair.ours)} ours / ${sumErrors(pair.bare)} bare` : ''}`);
      batchCurve.push({ size, pair });
    }
    const fnvRow = { hex: Buffer.from(fnv1a(loadArgs(64))).toString('hex') };
    const batchGuests: GrpcBenchResult['batchGuests'] = [];
    for (const g of [
      { name: 'echo guest, invoke-batch', module: 'batch-echo', entry: true, expect: 'echo' as const },
      { name: 'FNV-1a guest, per-row invoke', module: 'hash', entry: false, expect: fnvRow },
      { name: 'FNV-1a guest, invoke-batch', module: 'hash-batch', entry: true, expect: fnvRow },
    ]) {
      const runs: LoadResult[] = [];
      for (let r = 0; r < o.rounds; r++) {
        runs.push(await client.run(job(ours, { mode: 'stream', batch: BATCH_ROWS, concurrency: batchWindow(BATCH_ROWS), bytes: 64, module: g.module, expect: g.expect })));
        tally(o, `gRPC batch stream, ${BATCH_ROWS} rows, ${g.name}`, runs.at(-1)!);
      }
      o.log(`  batch stream, ${BATCH_ROWS} rows, ${g.name}: ${medianOps(runs).toFixed(0)} rows/s${sumErrors(runs) ? `, ERRORS ${sumErrors(runs)}` : ''}`);
      batchGuests.push({ name: g.name, module: g.module, entry: g.entry, runs });
    }

    // the KV guest's counter moves, so any value will do there
    const soloLoads: { name: string; module: string; bytes: number; expect?: LoadJob['expect'] }[] = [
      { name: 'unary c=16, KV guest (get + set, committed)', module: 'kv', bytes: 64 },
      { name: 'unary c=16, hash guest (FNV-1a of 4 KiB)', module: 'hash', bytes: 4096, expect: { hex: Buffer.from(fnv1a(loadArgs(4096))).toString('hex') } },
    ];
    const solo = [];
    for (const w of soloLoads) {
      const runs: LoadResult[] = [];
      for (let r = 0; r < o.rounds; r++) {
        runs.push(await client.run(job(ours, { mode: 'unary', concurrency: 16, bytes: w.bytes, module: w.module, expect: w.expect })));
        tally(o, `gRPC ${w.name}`, runs.at(-1)!);
      }
      o.log(`  ${w.name}: ${medianOps(runs).toFixed(0)}/s${sumErrors(runs) ? `, ERRORS ${sumErrors(runs)}` : ''}`);
      solo.push({ name: w.name, runs });
    }

    const cold = await coldPath(o, ours.address, ours.token, o.quick ? 3 : 8);
    o.log(`  cold path: push ${cold.pushMs.toFixed(1)} ms, push + first call ${cold.firstCallMs.toFixed(1)} ms`);
    return { pairs, batchCurve, batchGuests, solo, coldFirstCallMs: cold.firstCallMs, pushMs: cold.pushMs };
  } finally {
    await client.close();
    await Promise.all([bare.stop(), ours.stop()]);
  }
}
