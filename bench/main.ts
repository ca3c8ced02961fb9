// `npm run bench [-- --quick] [-- --json] [-- --chart FILE] [-- --batch-chart FILE]`: every figure measured side
// by side in one run (these machines are noisy), medians of rounds, ratios per pair.
// Prints a table; with --json, one JSON object as the last line; writes the chart SVG.
// Every measured call is checked: the JSON has `errors` (wrong answers, failed calls) and
// `valid` (no errors), the table says which workloads had them, and a run with errors
// says so loudly on stderr.
// `npm run bench -- --profile [--seconds N] [--grpc] [--top N]`: where main-thread and
// worker time goes per call on the hot path (CPU profiles, see bench/profile.ts).
// `npm run bench -- --sql [--quick] [--json]`: what one guest sql answered by the engine
// costs on a Stream (bench/sql-bench.ts).
// `npm run bench -- --shared-store [--seconds N] [--rounds N]`: the PostgreSQL store beside
// LMDB, and Invoke with 1 and 2 replicas (bench/shared-store.ts).
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { lineChartSvg } from './chart.js';
import { BATCH_ROWS, grpcBench, medianOps, pairRatio, sumErrors } from './grpc-bench.js';
import { runtimeBench } from './runtime-bench.js';
import { ErrorTally, median } from './stats.js';

const argv = process.argv.slice(2);
if (argv.includes('--shared-store')) {
  const { sharedStoreBench } = await import('./shared-store.js');
  await sharedStoreBench(argv.filter((a) => a !== '--shared-store'));
} else if (argv.includes('--profile')) {
  const { profile } = await import('./profile.js');
  process.exitCode = await profile(argv.filter((a) => a !== '--profile'));
} else if (argv.includes('--sql')) {
  const { sqlBench } = await import('./sql-bench.js');
  process.exitCode = await sqlBench(argv.filter((a) => a !== '--sql'));
} else {
  await bench();
}

async function bench() {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      chart: { type: 'string', default: 'bench/out/throughput.svg' },
      'batch-chart': { type: 'string', default: 'bench/out/batch.svg' },
    },
  });
  const quick = values.quick!;
  const started = performance.now();
  const log = (line: string) => console.error(line);
  const errors = new ErrorTally();

  log(`plughost bench (${quick ? 'quick' : 'full'}) on ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'}), node ${process.version}`);
  log('runtime (no gRPC):');
  const rt = await runtimeBench({ rounds: quick ? 3 : 5, calls: quick ? 2000 : 10_000, quick, log, errors });
  log('gRPC (load from a separate process, ours and the bare server alternating):');
  const g = await grpcBench({ rounds: quick ? 2 : 3, seconds: quick ? 1 : 3, quick, log, errors });

  const pair = (name: string) => g.pairs.find((p) => p.name === name)!;
  const unary16 = pair('unary c=16, 64 B');
  const stream64 = pair('stream, 64 B');
  const batchPair = g.batchCurve.find((b) => b.size === BATCH_ROWS)!.pair;
  const bareBatch = medianOps(batchPair.bare);
  const guest = (module: string) => medianOps(g.batchGuests.find((b) => b.module === module)!.runs);
  // the issue's targets: rows/s with per-row invoke and with invoke-batch, against the bare server's rows/s at the same batch size
  const batchRowsInvoke = medianOps(batchPair.ours);
  const batchRowsEntry = guest('batch-echo');
  const summary = {
    unary_ratio: pairRatio(unary16),
    stream_ratio: pairRatio(stream64),
    stream_vs_unary: medianOps(stream64.ours) / medianOps(unary16.ours),
    runtime_call_us: rt.runtime_call_us!,
    inthread_call_us: rt.inthread_call_us!,
    kv_call_us: rt.kv_call_us!,
    new_controller_ms: rt.new_controller_ms!,
    cold_first_call_ms: g.coldFirstCallMs,
    idle_controller_kib: rt.idle_controller_kib!,
    runtime_pipelined_call_us: rt.runtime_pipelined_call_us!,
    runtime_cold_first_call_ms: rt.runtime_cold_first_call_ms!,
    push_ms: g.pushMs,
    idle_1000_controllers_mib: rt.idle_1000_controllers_mib!,
    kv_get_in_call_us: rt.kv_get_in_call_us!,
    kv_get_set_in_call_us: rt.kv_get_set_in_call_us!,
    kv_durable_commit_us: rt.kv_durable_commit_us!,
    kv_writes_per_sec_grouped: rt.kv_writes_per_sec_grouped!,
    kv_writes_per_sec_per_call: rt.kv_writes_per_sec_per_call!,
    run_call_us: rt.run_call_us!,
    run_in_call_us: rt.run_in_call_us!,
    unary_c1_ratio: pairRatio(pair('unary c=1, 64 B')),
    unary_c64_ratio: pairRatio(pair('unary c=64, 64 B')),
    stream_4k_ratio: pairRatio(pair('stream, 4 KiB')),
    batch_rows_per_sec_invoke: batchRowsInvoke,
    batch_rows_per_sec_invoke_batch: batchRowsEntry,
    batch_rows_per_sec_fnv_invoke: guest('hash'),
    batch_rows_per_sec_fnv_invoke_batch: guest('hash-batch'),
    batch_rows_per_sec_bare: bareBatch,
    batch_ratio: batchRowsEntry / bareBatch,
    batch_ratio_invoke: pairRatio(batchPair),
    batch_vs_item: batchRowsInvoke / medianOps(stream64.ours),
    seconds: (performance.now() - started) / 1000,
  };
  const totalErrors = errors.errors;

  const n = (v: number) => (Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(2));
  const lines = [
    '',
    '| workload | plughost | bare grpc-js | ratio | errors (plughost / bare) |',
    '| --- | --- | --- | --- | --- |',
    ...g.pairs.map((p) => `| ${p.name} | ${n(medianOps(p.ours))}/s (p99 ${n(median(p.ours.map((r) => r.p99Us)))} µs) | ${n(medianOps(p.bare))}/s (p99 ${n(median(p.bare.map((r) => r.p99Us)))} µs) | ${pairRatio(p).toFixed(2)} | ${sumErrors(p.ours)} / ${sumErrors(p.bare)} |`),
    ...g.batchCurve.map(({ pair: p }) => `| ${p.name}, echo guest (per-row invoke) | ${n(medianOps(p.ours))} rows/s (p99 ${n(median(p.ours.map((r) => r.p99Us)))} µs per batch) | ${n(medianOps(p.bare))} rows/s | ${pairRatio(p).toFixed(2)} | ${sumErrors(p.ours)} / ${sumErrors(p.bare)} |`),
    ...g.batchGuests.map((b) => `| batch stream, ${BATCH_ROWS} rows of 64 B, ${b.name} | ${n(medianOps(b.runs))} rows/s (p99 ${n(median(b.runs.map((r) => r.p99Us)))} µs per batch) | ${n(bareBatch)} rows/s | ${(medianOps(b.runs) / bareBatch).toFixed(2)} | ${sumErrors(b.runs)} |`),
    ...g.solo.map((s) => `| ${s.name} | ${n(medianOps(s.runs))}/s (p99 ${n(median(s.runs.map((r) => r.p99Us)))} µs) | | | ${sumErrors(s.runs)} |`),
    '',
    '| measure | value |',
    '| --- | --- |',
    `| in-thread call of the echo guest through jco, no worker (floor) | ${n(summary.inthread_call_us)} µs |`,
    `| warm call through the Runtime API, sequential | ${n(summary.runtime_call_us)} µs (${(summary.runtime_call_us / summary.inthread_call_us).toFixed(1)}x the floor) |`,
    `| warm call through the Runtime API, 16 in flight | ${n(summary.runtime_pipelined_call_us)} µs each |`,
    `| Stream items/s over unary calls/s (c=16) | ${summary.stream_vs_unary.toFixed(2)}x |`,
    `| batch rows/s (${BATCH_ROWS} per batch, per-row invoke) over Stream items/s | ${summary.batch_vs_item.toFixed(1)}x |`,
    `| new controller (instantiate in its worker) | ${n(summary.new_controller_ms)} ms |`,
    `| push over gRPC (verify + compile) | ${n(summary.push_ms)} ms |`,
    `| push, then the first call, over gRPC | ${n(summary.cold_first_call_ms)} ms |`,
    `| RSS per idle controller | ${n(summary.idle_controller_kib)} KiB |`,
    `| RSS of ${rt.idle_1000_controllers_live} idle controllers over 50 modules | ${n(summary.idle_1000_controllers_mib)} MiB |`,
    `| KV get inside a call / get + set inside a call | ${n(summary.kv_get_in_call_us)} µs / ${n(summary.kv_get_set_in_call_us)} µs |`,
    `| KV write call (get + set + durable commit), sequential | ${n(summary.kv_call_us)} µs |`,
    `| one \`run\` inside a call (a call with one nested call, minus the same call without) | ${n(summary.run_in_call_us)} µs (the call: ${n(summary.run_call_us)} µs) |`,
    `| committed write-calls/s, grouped vs one commit per call | ${n(summary.kv_writes_per_sec_grouped)} vs ${n(summary.kv_writes_per_sec_per_call)} (${(summary.kv_writes_per_sec_grouped / summary.kv_writes_per_sec_per_call).toFixed(1)}x) |`,
    '',
    '| checked workload | calls | errors |',
    '| --- | --- | --- |',
    ...[...errors.rows].map(([name, r]) => `| ${name} | ${r.calls.toLocaleString('en-US')} | ${r.errors ? `**${r.errors.toLocaleString('en-US')}** (first: ${r.firstError ?? '?'})` : 0} |`),
    '',
    `took ${summary.seconds.toFixed(0)} s, ${totalErrors ? `${totalErrors} ERRORS: NOT VALID` : 'no errors'}`,
  ];
  console.log(lines.join('\n'));

  const levels = ['unary c=1, 64 B', 'unary c=16, 64 B', 'unary c=64, 64 B'].map(pair);
  const conc = [1, 16, 64];
  const svg = lineChartSvg('Unary Invoke throughput, echo guest, 64 B (medians)', 'concurrent calls', 'calls / s', [
    { name: 'bare grpc-js', color: '#888', points: levels.map((p, i) => ({ x: conc[i]!, y: medianOps(p.bare) })) },
    { name: 'plughost', color: '#1f6feb', points: levels.map((p, i) => ({ x: conc[i]!, y: medianOps(p.ours) })) },
  ]);
  mkdirSync(dirname(values.chart!), { recursive: true });
  writeFileSync(values.chart!, svg);
  log(`chart: ${values.chart}`);
  const batchSvg = lineChartSvg('Stream batches of 64 B rows, echo guest (medians)', 'rows per batch', 'rows / s', [
    { name: 'bare grpc-js', color: '#888', points: g.batchCurve.map(({ size, pair: p }) => ({ x: size, y: medianOps(p.bare) })) },
    { name: 'plughost', color: '#1f6feb', points: g.batchCurve.map(({ size, pair: p }) => ({ x: size, y: medianOps(p.ours) })) },
  ]);
  const batchChart = values['batch-chart']!;
  mkdirSync(dirname(batchChart), { recursive: true });
  writeFileSync(batchChart, batchSvg);
  log(`chart: ${batchChart}`);
  if (totalErrors > 0) {
    log('');
    log(`BENCH RUN HAD ${totalErrors} ERRORS — numbers are not valid`);
    for (const [name, r] of errors.rows) if (r.errors) log(`  ${name}: ${r.errors} of ${r.calls} calls wrong (first: ${r.firstError ?? '?'})`);
    log('');
  }
  if (values.json) {
    const figures = Object.fromEntries(Object.entries(summary).map(([k, v]) => [k, Number(v.toPrecision(4))]));
    console.log(JSON.stringify({ ...figures, errors: totalErrors, valid: totalErrors === 0 }));
  }
}
