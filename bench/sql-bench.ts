// `npm run bench -- --sql [--quick]`: what one guest `sql` answered by the engine costs over
// its Stream. The sql fixture asks once per item (this process plays the engine and answers at
// once with the vars) beside the same guest not asking (its "none" function), against one
// plughost in a child process, alternating A B A B in one run. One item in flight gives the
// round trip's latency; 16 in flight its cost in throughput. Every answer is checked.
// Beside it, the same two guests through the Runtime API with sql answered in-process: what
// the worker-to-main-thread hop costs, without the engine's gRPC round trip.
import { parseArgs } from 'node:util';
import type { StreamRequest } from '../gen/plughost/v1/plugin_pb.js';
import { connect, type Connection } from '../src/cli/client.js';
import type { InvocationContext } from '../src/runtime/context.js';
import { RuntimeManager } from '../src/runtime/manager.js';
import { fixture } from '../test/fixtures/build.js';
import { RequestQueue } from '../src/cli/request-queue.js';
import { startServerProcess } from './servers.js';
import { ErrorTally, median } from './stats.js';

type Req = { kind: StreamRequest['kind'] } & Partial<StreamRequest>;

interface Run {
  seconds: number;
  /** µs from sending each item to its outcome. */
  latencies: number[];
  errors: number;
  firstError?: string;
}

/** The 64 bytes of item `id`: its id, then a pattern; the guests answer them back (the engine answers the vars, which are these). */
function payload(id: bigint): Uint8Array {
  const b = Buffer.alloc(64, 0x5a);
  b.writeBigUInt64LE(id);
  return b;
}

/** `n` items on one stream, `depth` in flight, to the guest that asks (`ask`) or not (`none`). */
async function drive(c: Connection, fn: 'ask' | 'none', n: number, depth: number): Promise<Run> {
  const q = new RequestQueue<Req>();
  q.send({ kind: { case: 'options', value: { module: 'sql', function: fn === 'none' ? 'none' : undefined, window: depth, serveSql: true } } } as Req);
  const sentAt = new Map<bigint, number>();
  const run: Run = { seconds: 0, latencies: [], errors: 0 };
  let next = 0;
  let done = 0;
  const more = () => {
    while (next < n && next - done < depth) {
      const id = BigInt(next++);
      sentAt.set(id, performance.now());
      q.send({ kind: { case: 'item', value: { id, args: payload(id) } } } as Req);
    }
    if (done === n) q.end();
  };
  const t0 = performance.now();
  more();
  for await (const r of c.plugins.stream(q as AsyncIterable<StreamRequest>)) {
    if (r.hostCall) {
      q.send({ kind: { case: 'hostAnswer', value: { hostCallId: r.hostCall.hostCallId, result: { case: 'ok', value: r.hostCall.vars } } } } as Req);
      continue;
    }
    run.latencies.push((performance.now() - sentAt.get(r.id)!) * 1000);
    const o = r.outcome?.result;
    if (o?.case !== 'value' || Buffer.compare(o.value, payload(r.id)) !== 0) {
      run.errors++;
      run.firstError ??= `item ${r.id}: ${o?.case === 'guestError' ? `guest error ${o.value}` : o?.case === 'failure' ? `${o.value.code} ${o.value.message}` : 'a wrong value'}`;
    }
    done++;
    more();
  }
  run.seconds = (performance.now() - t0) / 1000;
  if (done !== n) run.errors += n - done;
  return run;
}

/** Median µs per call of each guest through the Runtime API (sequential), sql answered in this thread with the vars. */
async function inProcess(rounds: number, calls: number, errors: ErrorTally): Promise<{ ask: number; none: number; diff: number }> {
  const manager = await RuntimeManager.create({ workers: 2 });
  try {
    const rt = await manager.load(await fixture('sql'));
    const ctx: InvocationContext = { subject: 'bench', tenant: 'bench', kvAccess: 'none', sql: async (r) => ({ ok: r.vars }) };
    const args = payload(7n);
    const time = async (fn: string | undefined, n: number) => {
      let wrong = 0;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const r = await rt.invoke(ctx, fn, args);
        if (!r.ok || Buffer.compare(r.value, args) !== 0) wrong++;
      }
      errors.add(`sql bench: Runtime API, ${fn ?? 'ask'}`, n, wrong, wrong ? 'a wrong answer' : undefined);
      return ((performance.now() - t0) * 1000) / n;
    };
    await time(undefined, 5000);
    await time('none', 5000);
    const r = { ask: [] as number[], none: [] as number[], diff: [] as number[] };
    for (let round = 0; round < rounds; round++) {
      const none = await time('none', calls);
      const ask = await time(undefined, calls);
      r.none.push(none);
      r.ask.push(ask);
      r.diff.push(ask - none);
    }
    return { ask: median(r.ask), none: median(r.none), diff: median(r.diff) };
  } finally {
    await manager.close();
  }
}

export async function sqlBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
  const rounds = values.quick ? 3 : 5;
  const sequential = values.quick ? 1000 : 3000;
  const pipelined = values.quick ? 3000 : 10_000;
  const log = (line: string) => console.error(line);
  const errors = new ErrorTally();
  const local = await inProcess(rounds, sequential, errors);
  log(`Runtime API, sql answered in-process: ${local.none.toFixed(0)} vs ${local.ask.toFixed(0)} µs per call`);
  const server = await startServerProcess('plughost');
  const c = connect({ address: server.address, token: server.token });
  try {
    // warm both guests' controllers and the code on both sides
    for (const fn of ['ask', 'none'] as const) await drive(c, fn, 2000, 16);
    const seq = { ask: [] as number[], none: [] as number[], diff: [] as number[] };
    const pipe = { ask: [] as number[], none: [] as number[], diff: [] as number[] };
    for (let round = 0; round < rounds; round++) {
      const s: Record<string, Run> = {};
      const p: Record<string, Run> = {};
      for (const fn of ['none', 'ask'] as const) {
        s[fn] = await drive(c, fn, sequential, 1);
        p[fn] = await drive(c, fn, pipelined, 16);
        for (const [depth, r] of [[1, s[fn]!], [16, p[fn]!]] as const) errors.add(`sql bench: ${fn}, ${depth} in flight`, depth === 1 ? sequential : pipelined, r.errors, r.firstError);
      }
      const lat = (fn: string) => median(s[fn]!.latencies);
      const ops = (fn: string) => pipelined / p[fn]!.seconds;
      seq.ask.push(lat('ask'));
      seq.none.push(lat('none'));
      seq.diff.push(lat('ask') - lat('none'));
      pipe.ask.push(ops('ask'));
      pipe.none.push(ops('none'));
      pipe.diff.push(1e6 / ops('ask') - 1e6 / ops('none'));
      log(`round ${round + 1}/${rounds}: 1 in flight ${lat('none').toFixed(0)} vs ${lat('ask').toFixed(0)} µs per item; 16 in flight ${ops('none').toFixed(0)} vs ${ops('ask').toFixed(0)} items/s`);
    }
    const n = (v: number) => (Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1));
    console.log(
      [
        '',
        '| Stream workload (64 B items) | guest without sql | guest with one sql per item | one sql round trip |',
        '| --- | --- | --- | --- |',
        `| 1 item in flight, median latency | ${n(median(seq.none))} µs | ${n(median(seq.ask))} µs | +${n(median(seq.diff))} µs |`,
        `| 16 items in flight, throughput | ${n(median(pipe.none))} items/s | ${n(median(pipe.ask))} items/s | +${n(median(pipe.diff))} µs per item |`,
        `| Runtime API, sql answered in-process (no gRPC), sequential | ${n(local.none)} µs | ${n(local.ask)} µs | +${n(local.diff)} µs |`,
        '',
        `${rounds} rounds (medians; a difference is the median of each round's), ${errors.errors ? `${errors.errors} ERRORS: NOT VALID` : 'no errors'}`,
      ].join('\n'),
    );
    if (values.json) console.log(JSON.stringify({ sql_bridge_us: local.diff, sql_round_trip_us: median(seq.diff), sql_pipelined_cost_us: median(pipe.diff), latency_without_us: median(seq.none), latency_with_us: median(seq.ask), items_per_sec_without: median(pipe.none), items_per_sec_with: median(pipe.ask), errors: errors.errors, valid: errors.errors === 0 }));
    return errors.errors ? 1 : 0;
  } finally {
    c.close();
    await server.stop();
  }
}
