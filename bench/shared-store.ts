// `npm run bench -- --shared-store [--seconds N] [--rounds N]`: what the shared PostgreSQL
// store costs beside the embedded LMDB one, on a throwaway PostgreSQL with fsync on (as in
// production) started here. Two parts:
// - KV calls through the Runtime API (no gRPC), LMDB and PostgreSQL alternating by round:
//   a read call (kv-get) and a durable write call (kv-get + kv-set + commit), one at a time,
//   and write calls 16 at once over 16 scopes.
// - Invoke over gRPC (`plughost serve` processes, a grpc-js client balancing round-robin in
//   this process, 16 calls in flight) with 1 and 2 replicas on PostgreSQL, beside 1 on LMDB:
//   a guest with no KV (echo), a KV read, a KV write; all setups up at once, rounds alternating.
// Every call is checked; medians of rounds are printed as a Markdown table.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { status } from '@grpc/grpc-js';
import { connect } from '../src/cli/client.js';
import { LmdbKvStore } from '../src/kv/lmdb-store.js';
import { PgKvStore } from '../src/kv/pg-store.js';
import type { KvStore } from '../src/kv/types.js';
import { PgDatabase } from '../src/pg/db.js';
import { RuntimeManager } from '../src/runtime/manager.js';
import { fixture } from '../test/fixtures/build.js';
import { PgCluster } from '../test/helpers/postgres.js';
import { RoundRobinClient } from '../test/helpers/round-robin.js';
import { startServeProcess, type ServeProcess } from '../test/helpers/serve-process.js';
import { push } from '../test/helpers/service.js';
import { median, percentile } from './stats.js';

const enc = (s: string) => new TextEncoder().encode(s);

export async function sharedStoreBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' } } });
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const log = (line: string) => console.error(line);
  const cluster = await PgCluster.start({ durable: true });
  const tmp = mkdtempSync(join(tmpdir(), 'plughost-bench-store-'));
  try {
    log(`PostgreSQL (fsync on) at ${cluster.url()}; ${rounds} rounds of ${seconds} s per figure`);
    const kv = await kvCalls(await cluster.createDatabase('bench_kv'), join(tmp, 'lmdb'), seconds, rounds, log);
    const grpc = await invokeThroughput(cluster, join(tmp, 'serve'), seconds, rounds, log);
    console.log('\n| KV call, Runtime API (no gRPC) | LMDB | PostgreSQL | PostgreSQL / LMDB |\n| --- | --- | --- | --- |');
    for (const [name, r] of Object.entries(kv)) console.log(`| ${name} | ${r.lmdb} | ${r.pg} | ${r.ratio} |`);
    console.log('\n| Invoke over gRPC, c=16 | LMDB, 1 process | PostgreSQL, 1 replica | PostgreSQL, 2 replicas |\n| --- | --- | --- | --- |');
    for (const [name, r] of Object.entries(grpc)) console.log(`| ${name} | ${r.join(' | ')} |`);
  } finally {
    cluster.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Calls `fn` for `seconds`, `concurrency` at once; per-call µs (median, p99) and calls/s. Throws on a wrong answer. */
async function timed(seconds: number, concurrency: number, fn: (lane: number) => Promise<void>): Promise<{ perSecond: number; p50: number; p99: number }> {
  const lat: number[] = [];
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      while (performance.now() < until) {
        const s = performance.now();
        await fn(lane);
        lat.push((performance.now() - s) * 1000);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { perSecond: lat.length / elapsed, p50: median(lat), p99: percentile(lat, 99) };
}

async function kvCalls(url: string, lmdbPath: string, seconds: number, rounds: number, log: (l: string) => void) {
  const db = await PgDatabase.open({ url, poolSize: 20, statementTimeoutMs: 10_000, connectTimeoutMs: 5_000 });
  const stores: Record<'lmdb' | 'pg', KvStore> = { lmdb: new LmdbKvStore({ path: lmdbPath }), pg: new PgKvStore(db) };
  const figures: Record<string, Record<'lmdb' | 'pg', number[]>> = {};
  const add = (name: string, which: 'lmdb' | 'pg', v: number) => ((figures[name] ??= { lmdb: [], pg: [] })[which].push(v));
  try {
    const managers = { lmdb: await RuntimeManager.create({ workers: 2, store: stores.lmdb }), pg: await RuntimeManager.create({ workers: 2, store: stores.pg }) };
    try {
      const bytes = await fixture('kv');
      for (let round = 1; round <= rounds; round++) {
        for (const which of ['lmdb', 'pg'] as const) {
          const kv = await managers[which].load(bytes, { name: 'kv' });
          const ctx = (tenant: string) => ({ subject: 'bench', tenant, kvAccess: 'write' as const });
          const ok = (r: { ok: boolean }) => {
            if (!r.ok) throw new Error(`${which}: a KV call failed: ${JSON.stringify(r)}`);
          };
          if (round === 1) for (let i = 0; i < 200; i++) ok(await kv.invoke(ctx('t0'), undefined, new Uint8Array()));
          const read = await timed(seconds, 1, async () => ok(await kv.invoke(ctx('t0'), 'get', enc('n'))));
          const write = await timed(seconds, 1, async () => ok(await kv.invoke(ctx('t0'), undefined, new Uint8Array())));
          const write16 = await timed(seconds, 16, async (lane) => ok(await kv.invoke(ctx(`t${lane}`), undefined, new Uint8Array())));
          add('read call (kv-get), one at a time: µs per call (p99)', which, read.p50);
          add('read p99', which, read.p99);
          add('durable write call (get + set + commit), one at a time: µs per call (p99)', which, write.p50);
          add('write p99', which, write.p99);
          add('durable write calls/s, 16 at once over 16 scopes', which, write16.perSecond);
          log(`round ${round} ${which}: read ${read.p50.toFixed(0)} µs, write ${write.p50.toFixed(0)} µs, 16 writers ${write16.perSecond.toFixed(0)}/s`);
        }
      }
    } finally {
      await managers.lmdb.close();
      await managers.pg.close();
    }
  } finally {
    await stores.lmdb.close();
    await stores.pg.close();
    await db.close();
  }
  const m = (name: string, which: 'lmdb' | 'pg') => median(figures[name]![which]);
  const us = (name: string, p99: string, which: 'lmdb' | 'pg') => `${m(name, which).toFixed(0)} µs (${m(p99, which).toFixed(0)})`;
  const rows: Record<string, { lmdb: string; pg: string; ratio: string }> = {};
  for (const [name, p99] of [
    ['read call (kv-get), one at a time: µs per call (p99)', 'read p99'],
    ['durable write call (get + set + commit), one at a time: µs per call (p99)', 'write p99'],
  ] as const) rows[name] = { lmdb: us(name, p99, 'lmdb'), pg: us(name, p99, 'pg'), ratio: `${(m(name, 'pg') / m(name, 'lmdb')).toFixed(1)}x` };
  const w = 'durable write calls/s, 16 at once over 16 scopes';
  rows[w] = { lmdb: m(w, 'lmdb').toFixed(0), pg: m(w, 'pg').toFixed(0), ratio: `${(m(w, 'pg') / m(w, 'lmdb')).toFixed(2)}x` };
  return rows;
}

async function invokeThroughput(cluster: PgCluster, dir: string, seconds: number, rounds: number, log: (l: string) => void) {
  const setups: { name: string; env: Record<string, string>; replicas: number }[] = [
    { name: 'LMDB, 1 process', env: {}, replicas: 1 },
    { name: 'PostgreSQL, 1 replica', env: { PLUGHOST_STORE: await cluster.createDatabase('bench_one') }, replicas: 1 },
    { name: 'PostgreSQL, 2 replicas', env: { PLUGHOST_STORE: await cluster.createDatabase('bench_two') }, replicas: 2 },
  ];
  const workloads = [
    { name: 'echo (no KV), calls/s', module: 'echo', fn: undefined, args: enc('x'.repeat(64)) },
    { name: 'KV read (kv-get), calls/s', module: 'kv', fn: 'get', args: enc('n') },
    { name: 'KV write (get + set, one scope), calls/s', module: 'kv', fn: undefined, args: new Uint8Array() },
  ];
  const results: Record<string, number[][]> = Object.fromEntries(workloads.map((w) => [w.name, setups.map(() => [])]));
  // every setup runs at once (idle ones sleep) and rounds alternate between them: A B C A B C
  const procs: ServeProcess[][] = setups.map(() => []);
  const clients: RoundRobinClient[] = [];
  try {
    for (const [si, s] of setups.entries()) {
      for (let i = 0; i < s.replicas; i++) procs[si]!.push(await startServeProcess(join(dir, `${si}-${i}`), { ...s.env, PLUGHOST_WORKERS: '2', PLUGHOST_POSTGRES__POOL_SIZE: '32' }));
      const token = procs[si]![0]!.token!;
      const c = connect({ address: procs[si]![0]!.address, token });
      try {
        await push(c, 'echo', '1.0.0', await fixture('echo'));
        await push(c, 'kv', '1.0.0', await fixture('kv'));
      } finally {
        c.close();
      }
      clients.push(new RoundRobinClient(procs[si]!.map((p) => p.address), token));
    }
    for (const w of workloads) {
      const call = (si: number) => async () => {
        const r = await clients[si]!.invoke(w.module, w.fn, w.args);
        if (r.code !== status.OK || r.value === undefined) throw new Error(`${setups[si]!.name} ${w.name}: ${status[r.code]} ${r.message ?? r.guestError}`);
      };
      for (const si of setups.keys()) for (let i = 0; i < 200; i++) await call(si)();
      for (let round = 0; round < rounds; round++) {
        for (const si of setups.keys()) results[w.name]![si]!.push((await timed(seconds, 16, call(si))).perSecond);
      }
      log(`${w.name}: ${setups.map((s, si) => `${s.name} ${median(results[w.name]![si]!).toFixed(0)}`).join(', ')}`);
    }
  } finally {
    for (const c of clients) c.close();
    for (const p of procs.flat()) p.child.kill('SIGTERM');
    await Promise.all(procs.flat().map((p) => p.exited));
  }
  return Object.fromEntries(Object.entries(results).map(([name, per]) => [name, per.map((v) => median(v).toFixed(0))]));
}
