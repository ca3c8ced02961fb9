// What an operator sees: configuration from a file and the environment (errors name the
// key), Prometheus metrics that move with calls, and JSON logs that carry a request id.
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { loadConfig } from '../src/service/config-source.js';
import { createLogger } from '../src/service/logger.js';
import { MAX_FUNCTION_LABELS } from '../src/service/metrics.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/kv.js';
import { clients, pushFixture, startPlughost } from './helpers/service.js';

test('configuration: a YAML file, then PLUGHOST_* environment overrides, then flags; every key has a default', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'plughost.yaml');
  writeFileSync(file, 'listen: 127.0.0.1:7000\nlimits:\n  maxExecutionMs: 1500\n  kv:\n    maxValueBytes: 4096\nmetrics:\n  listen: ""\n');
  const c = loadConfig({
    file,
    env: { PLUGHOST_LIMITS__MAX_EXECUTION_MS: '900', PLUGHOST_STREAM__MAX_WINDOW: '128', PLUGHOST_TOKEN: 'a client setting, not ours', HOME: '/root' },
    flags: { dataDir: '/tmp/somewhere' },
  });
  t.is(c.listen, '127.0.0.1:7000');
  t.is(c.limits.maxExecutionMs, 900, 'the environment beats the file');
  t.is(c.limits.kv.maxValueBytes, 4096);
  t.is(c.limits.kv.maxKeyBytes, 1024, 'keys the file does not name keep their defaults');
  t.is(c.stream.maxWindow, 128);
  t.is(c.dataDir, '/tmp/somewhere');
  t.is(c.metrics.listen, '');
  const json = join(dir, 'plughost.json');
  writeFileSync(json, JSON.stringify({ workers: 3 }));
  t.is(loadConfig({ file: json }).workers, 3, 'JSON files work too');
  t.is(loadConfig({}).limits.maxPoolSize, 64);
});

test('configuration errors name the key, and the variable that set it', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, 'limits:\n  maxExecutionMs: -5\n  maxPoolSiz: 3\n');
  const e = t.throws(() => loadConfig({ file }));
  t.regex(e!.message, /limits\.maxExecutionMs: .*>=1/);
  t.regex(e!.message, /maxPoolSiz/);
  const fromEnv = t.throws(() => loadConfig({ env: { PLUGHOST_GRPC__MAX_RECEIVE_MESSAGE_BYTES: 'lots' } }));
  t.regex(fromEnv!.message, /grpc\.maxReceiveMessageBytes \(from PLUGHOST_GRPC__MAX_RECEIVE_MESSAGE_BYTES\):/);
  writeFileSync(join(dir, 'broken.yaml'), 'listen: [unclosed\n');
  t.throws(() => loadConfig({ file: join(dir, 'broken.yaml') }), { message: /not valid YAML or JSON/ });
  t.throws(() => loadConfig({ file: join(dir, 'missing.yaml') }), { message: /cannot read the configuration file/ });
});

test('plughost serve with a bad configuration prints one line naming the key and exits non-zero', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'c.yaml'), 'workers: 0\n');
  const r = await runCli(['serve', '--config', join(dir, 'c.yaml'), '--data', dir]);
  t.is(r.code, 1);
  t.regex(r.stderr, /^plughost: INVALID_ARGUMENT: invalid configuration: workers: /);
  t.is(r.stderr.trim().split('\n').length, 1);
});

test('store: lmdb by default, a postgres:// URL from the environment with its settings, anything else refused naming the variable', (t) => {
  t.is(loadConfig({}).store, 'lmdb');
  const c = loadConfig({ env: { PLUGHOST_STORE: 'postgres://u@db.internal:5432/plughost?sslmode=require', PLUGHOST_POSTGRES__POLL_MS: '250' } });
  t.is(c.store, 'postgres://u@db.internal:5432/plughost?sslmode=require');
  t.like(c.postgres, { pollMs: 250, poolSize: 16, statementTimeoutMs: 10_000, connectTimeoutMs: 5000 });
  const e = t.throws(() => loadConfig({ env: { PLUGHOST_STORE: 'mysql://db/plughost' } }));
  t.regex(e!.message, /store \(from PLUGHOST_STORE\):/);
});

test('plughost serve on a PostgreSQL that is not there fails at once with one UNAVAILABLE line and a non-zero exit', async (t) => {
  const dir = tempDir(t);
  // port 1 on loopback: nothing listens there, the connection is refused at once
  const r = await runCli(['serve', '--data', dir], { env: { PLUGHOST_STORE: 'postgres://plughost@127.0.0.1:1/plughost', PLUGHOST_POSTGRES__CONNECT_TIMEOUT_MS: '2000', PLUGHOST_METRICS__LISTEN: '' } });
  t.is(r.code, 1);
  t.regex(r.stderr, /^plughost: UNAVAILABLE: opening the PostgreSQL store: the PostgreSQL store is unavailable: /);
  t.is(r.stderr.trim().split('\n').length, 1);
});

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  return res.text();
}
const sample = (text: string, series: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
};

test('/metrics: call counters by outcome, latency, pool state, drops, worker restarts, compile time and KV move with calls', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo');
  await pushFixture(c, 'faults');
  await pushFixture(c, 'kv');
  const before = await scrape(host.metricsServer!.address);
  for (let i = 0; i < 5; i++) await c.plugins.invoke({ module: 'echo', args: new Uint8Array([i]) });
  await c.plugins.invoke({ module: 'faults', function: 'err' });
  await c.plugins.invoke({ module: 'faults', function: 'trap' }).catch(() => undefined);
  await c.plugins.invoke({ module: 'kv' });
  await c.plugins.invoke({ module: 'nope' }).catch(() => undefined);
  const after = await scrape(host.metricsServer!.address);
  const delta = (s: string) => sample(after, s) - sample(before, s);
  t.is(delta('plughost_calls_total{module="echo",function="(default)",outcome="ok"}'), 5);
  t.is(delta('plughost_calls_total{module="faults",function="err",outcome="guest_error"}'), 1);
  t.is(delta('plughost_calls_total{module="faults",function="trap",outcome="TRAP"}'), 1);
  t.is(delta('plughost_calls_total{module="(unresolved)",function="(default)",outcome="NOT_FOUND"}'), 1);
  t.is(delta('plughost_call_duration_seconds_count{module="echo",function="(default)"}'), 5);
  t.regex(after, /plughost_controllers_dropped_total\{module="faults",hash="[0-9a-f]{12}",reason="trap"\} 1/);
  t.regex(after, /plughost_controllers_idle\{module="echo",hash="[0-9a-f]{12}"\} [1-9]/);
  t.regex(after, /plughost_controllers_created_total\{module="kv",hash="[0-9a-f]{12}"\} 1/);
  t.is(sample(after, 'plughost_compile_duration_seconds_count'), 3);
  t.is(delta('plughost_kv_operations_total{op="kvGet"}'), 1);
  t.is(delta('plughost_kv_operations_total{op="kvSet"}'), 1);
  t.is(delta('plughost_kv_commit_duration_seconds_count'), 1);
  t.regex(after, /^plughost_worker_restarts_total 0$/m);
  t.regex(after, /^plughost_semaphore_waiters\{/m);
  t.regex(after, /^plughost_process_resident_memory_bytes /m);
  t.is((await fetch(`http://${host.metricsServer!.address}/other`)).status, 404);
});

test(`/metrics: caller-chosen function names are capped at ${MAX_FUNCTION_LABELS} series per module, the rest count as (other)`, async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'echo'); // no list-functions: any function name is the guest's to judge
  const extra = 10;
  for (let i = 0; i < MAX_FUNCTION_LABELS + extra; i++) await c.plugins.invoke({ module: 'echo', function: `f${i}` });
  for (let i = 0; i < MAX_FUNCTION_LABELS + extra; i++) await c.plugins.invoke({ module: 'absent', function: `g${i}` }).catch(() => undefined);
  const text = await scrape(host.metricsServer!.address);
  const echoSeries = text.split('\n').filter((l) => l.startsWith('plughost_calls_total{module="echo"'));
  t.is(echoSeries.length, MAX_FUNCTION_LABELS + 1);
  t.is(sample(text, 'plughost_calls_total{module="echo",function="f0",outcome="ok"}'), 1);
  t.is(sample(text, `plughost_calls_total{module="echo",function="f${MAX_FUNCTION_LABELS - 1}",outcome="ok"}`), 1);
  t.is(sample(text, 'plughost_calls_total{module="echo",function="(other)",outcome="ok"}'), extra);
  t.is(text.split('\n').filter((l) => l.startsWith('plughost_calls_total{module="(unresolved)"')).length, MAX_FUNCTION_LABELS + 1, 'calls of unknown modules too');
  t.is(sample(text, 'plughost_calls_total{module="(unresolved)",function="(other)",outcome="NOT_FOUND"}'), extra);
});

test('logs: JSON lines, and every line of one call carries its request id (the client\'s x-request-id)', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const logger = createLogger('debug', sink);
  const { Plughost } = await import('../src/service/plughost.js');
  const host = await Plughost.start({ listen: '127.0.0.1:0', dataDir: tempDir(t), workers: 2, metrics: { listen: '' } }, { logger });
  t.teardown(() => host.close(2000));
  const c = clients(t, host.address, host.createdAdminToken);
  await pushFixture(c, 'logger');
  await pushFixture(c, 'faults');
  await c.plugins.invoke({ module: 'logger', args: new TextEncoder().encode('hello from the guest') }, { headers: { 'x-request-id': 'req-42' } });
  await c.plugins.invoke({ module: 'faults', function: 'trap' }, { headers: { 'x-request-id': 'req-43' } }).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 100));
  const of42 = lines.filter((l) => l.reqId === 'req-42');
  t.true(of42.some((l) => l.guest === true && l.msg === 'hello from the guest' && l.level === 30 && l.module === 'logger'), JSON.stringify(of42));
  t.true(of42.some((l) => l.msg === 'call' && l.outcome === 'ok'), 'the call line');
  const trap = lines.find((l) => l.reqId === 'req-43' && l.msg === 'call failed');
  t.like(trap, { code: 'TRAP', level: 40, subject: 'admin' });
  t.true(lines.some((l) => l.msg === 'module pushed' && l.module === 'logger@1.0.0' && typeof l.reqId === 'string'));
  t.true(lines.every((l) => typeof l.time === 'string' && typeof l.level === 'number'));
});
