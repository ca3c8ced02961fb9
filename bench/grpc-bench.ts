// gRPC workloads: plughost against a bare grpc-js echo server, both in child processes,
// loaded by a third child (the load client), alternating ours and the baseline (A B A B)
// so that both see the same noise. Also the cold path: push a new module, then call it.
import { createClient } from '@connectrpc/connect';
import { Http2SessionManager, createGrpcTransport } from '@connectrpc/connect-node';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ModuleService } from '../gen/plughost/v1/module_pb.js';
import { PluginService } from '../gen/plughost/v1/plugin_pb.js';
import { fixture, withCustomSection } from '../test/fixtures/build.js';
import type { LoadJob, LoadResult } from '../src/cli/load.js';
import { startServerProcess } from './servers.js';
import { median } from './stats.js';

export interface GrpcBenchOptions {
  rounds: number;
  seconds: number;
  quick: boolean;
  log(line: string): void;
}

export interface Pair {
  name: string;
  ours: LoadResult[];
  bare: LoadResult[];
}

export interface GrpcBenchResult {
  pairs: Pair[];
  solo: { name: string; runs: LoadResult[] }[];
  coldFirstCallMs: number;
  pushMs: number;
}

export const medianOps = (rs: LoadResult[]) => median(rs.map((r) => r.opsPerSec));
/** The median of each pair's ratio (ours / bare), each pair run back to back. */
export const pairRatio = (p: Pair) => median(p.ours.map((o, i) => o.opsPerSec / p.bare[i]!.opsPerSec));

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

async function coldPath(address: string, token: string, times: number): Promise<{ pushMs: number; firstCallMs: number }> {
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
      await modules.pushModule((async function* () {
        yield { part: { case: 'manifest' as const, value: { name: `cold${i}`, version: '1.0.0' } } };
        yield { part: { case: 'chunk' as const, value: bytes } };
      })());
      const t1 = performance.now();
      await plugins.invoke({ module: `cold${i}` });
      const t2 = performance.now();
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
    for (const s of [bare, ours]) await client.run({ ...job(s, { mode: 'unary', concurrency: 16, bytes: 64, module: 'echo' }), seconds: 0.5 });

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
        pair.bare.push(await client.run(job(bare, { ...w, module: 'echo' })));
        pair.ours.push(await client.run(job(ours, { ...w, module: 'echo' })));
      }
      o.log(`  ${w.name}: ours ${medianOps(pair.ours).toFixed(0)}/s, bare ${medianOps(pair.bare).toFixed(0)}/s`);
      pairs.push(pair);
    }

    const soloLoads: { name: string; module: string; bytes: number }[] = [
      { name: 'unary c=16, KV guest (get + set, committed)', module: 'kv', bytes: 64 },
      { name: 'unary c=16, hash guest (FNV-1a of 4 KiB)', module: 'hash', bytes: 4096 },
    ];
    const solo = [];
    for (const w of soloLoads) {
      const runs: LoadResult[] = [];
      for (let r = 0; r < o.rounds; r++) runs.push(await client.run(job(ours, { mode: 'unary', concurrency: 16, bytes: w.bytes, module: w.module })));
      o.log(`  ${w.name}: ${medianOps(runs).toFixed(0)}/s`);
      solo.push({ name: w.name, runs });
    }

    const cold = await coldPath(ours.address, ours.token, o.quick ? 3 : 8);
    o.log(`  cold path: push ${cold.pushMs.toFixed(1)} ms, push + first call ${cold.firstCallMs.toFixed(1)} ms`);
    return { pairs, solo, coldFirstCallMs: cold.firstCallMs, pushMs: cold.pushMs };
  } finally {
    await client.close();
    await Promise.all([bare.stop(), ours.stop()]);
  }
}
