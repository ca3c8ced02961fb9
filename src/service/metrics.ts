// Prometheus metrics (prom-client, in a registry of our own so that two services in one
// process do not collide), served as text on their own HTTP listener. Counters of calls
// are counted at the edge; pool and worker state is read from the runtime at scrape time.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { PlughostError } from '../errors.js';
import type { RuntimeManager, RuntimeObserver } from '../runtime/manager.js';
import type { PoolStats } from '../runtime/runtime.js';
import type { HostCallObserver } from './stream-host-calls.js';

/** Distinct `function` label values kept per module; callers choose the names, so they are capped. */
export const MAX_FUNCTION_LABELS = 64;

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  readonly calls = new Counter({
    name: 'plughost_calls_total',
    help: 'Plugin calls (Invoke, Stream items and each row of a Stream batch) by module, function and outcome (ok, guest_error or an error code)',
    labelNames: ['module', 'function', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'plughost_call_duration_seconds',
    help: 'Time from a call reaching plughost to its outcome, by module and function',
    labelNames: ['module', 'function'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly compileSeconds = new Histogram({
    name: 'plughost_compile_duration_seconds',
    help: 'Time to verify, transpile and compile one module',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  private readonly hostCalls = new Counter({
    name: 'plughost_host_calls_total',
    help: 'Guest sql calls sent to the engine on a Stream, by outcome: answered (ok), error (the engine answered an error), timeout (the guest stopped waiting: hostCallTimeoutMs, its call\'s time, or its call ended), engine_closed (the engine closed its side or the stream ended first); refused counts answers refused (unknown id, answered already, given up on)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly hostCallSeconds = new Histogram({
    name: 'plughost_host_call_seconds',
    help: 'Time from sending a guest\'s sql to the engine to its answer (answered or error)',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  /** Counts and times a Stream's host calls as they end (stream-host-calls.ts). */
  readonly hostCallObserver: HostCallObserver = (outcome, seconds) => {
    this.hostCalls.inc({ outcome });
    if (seconds !== undefined) this.hostCallSeconds.observe(seconds);
  };
  private readonly kvCommit = new Histogram({
    name: 'plughost_kv_commit_duration_seconds',
    help: 'Time for a call\'s KV writes to become durable (grouped commits)',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  /** The hooks the runtime calls. */
  readonly observer: RuntimeObserver = {
    compiled: (s) => this.compileSeconds.observe(s),
    kvCommitted: (s) => this.kvCommit.observe(s),
  };

  /** The function names seen per module label, up to MAX_FUNCTION_LABELS each. */
  private readonly functionNames = new Map<string, Set<string>>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'plughost_' });
  }

  /**
   * The `function` label for a call. A module without list-functions takes any name, and an
   * unknown module any name too, so a caller could otherwise grow the series without bound:
   * past MAX_FUNCTION_LABELS names in one module the rest count as `(other)`.
   */
  functionLabel(module: string, fn: string): string {
    let seen = this.functionNames.get(module);
    if (!seen) this.functionNames.set(module, (seen = new Set()));
    if (seen.has(fn)) return fn;
    if (seen.size >= MAX_FUNCTION_LABELS) return '(other)';
    seen.add(fn);
    return fn;
  }

  /** Gauges and counters read from the runtime when scraped. */
  watch(manager: RuntimeManager): void {
    // the labels of one module's series: its name and the start of its hash (versions differ)
    const each = (set: (labels: { module: string; hash: string }, v: number) => void, read: (s: PoolStats) => number) => {
      for (const r of manager.loaded()) set({ module: r.name, hash: r.hash.slice(7, 19) }, read(r.stats()));
    };
    const gauge = (name: string, help: string, read: (s: PoolStats) => number) =>
      new Gauge({ name, help, labelNames: ['module', 'hash'] as const, registers: [this.registry], collect() {
        this.reset();
        each((l, v) => this.set(l, v), read);
      } });
    const counter = (name: string, help: string, read: (s: PoolStats) => number) =>
      new Counter({ name, help, labelNames: ['module', 'hash'] as const, registers: [this.registry], collect() {
        this.reset();
        each((l, v) => this.inc(l, v), read);
      } });
    gauge('plughost_controllers_in_use', 'Controllers checked out for a call, by module', (s) => s.inUse);
    gauge('plughost_controllers_idle', 'Idle controllers pooled for reuse, by module', (s) => s.idle);
    gauge('plughost_semaphore_waiters', 'Calls waiting for a controller permit, by module', (s) => s.waiters);
    counter('plughost_controllers_created_total', 'Controllers created, by module', (s) => s.created);
    counter('plughost_controllers_evicted_total', 'Idle controllers evicted (idle time or the process-wide cap), by module', (s) => s.evicted);
    new Counter({
      name: 'plughost_controllers_dropped_total',
      help: 'Controllers discarded, by module and reason (trap, timeout, memory, init, other)',
      labelNames: ['module', 'hash', 'reason'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const r of manager.loaded()) {
          for (const [reason, n] of Object.entries(r.stats().dropped)) this.inc({ module: r.name, hash: r.hash.slice(7, 19), reason }, n);
        }
      },
    });
    // totals the runtime keeps, read at scrape: one number, or one per value of `label`
    const total = (name: string, help: string, read: () => number | Record<string, number>, label?: string) =>
      new Counter({ name, help, labelNames: label ? [label] : [], registers: [this.registry], collect() {
        this.reset();
        const v = read();
        if (typeof v === 'number') this.inc(v);
        else for (const [key, n] of Object.entries(v)) if (n > 0) this.inc({ [label!]: key }, n);
      } });
    total('plughost_kv_operations_total', 'KV host calls made by guests, by operation (counted in the workers, read at scrape)', () => manager.stats().kvOps, 'op');
    total('plughost_worker_restarts_total', 'Runtime workers replaced after a timeout or a crash', () => manager.stats().workerRestarts);
    total('plughost_worker_recycles_total', 'Runtime workers replaced because their heap stood over workerRecycleHeapMb above its start after a call', () => manager.stats().workerRecycles);
    total('plughost_guest_log_lines_dropped_total', 'Guest log lines dropped over guestLogLinesPerSecond or guestLogBytesPerSecond, by module', () => manager.stats().guestLogDropped, 'module');
    total('plughost_worker_output_lines_dropped_total', 'Lines runtime and transpiler workers printed themselves, dropped over the rate limit (the others go to the log at warn)', () => manager.stats().workerOutputDropped);
    total('plughost_calls_moved_total', 'Calls taken back from a worker busy with a long call and placed on another', () => manager.stats().callsMoved);
    new Gauge({
      name: 'plughost_controllers_live',
      help: 'Live controllers in the process (capped by maxControllers)',
      registers: [this.registry],
      collect() {
        this.set(manager.stats().liveControllers);
      },
    });
  }
}


/** Serves `GET /metrics` on `listen` (host:port); `close()` stops it. */
export async function serveMetrics(metrics: Metrics, listen: string): Promise<{ address: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(e)}\n`),
    );
  });
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at).replace(/^\[|\]$/g, '');
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new PlughostError('UNAVAILABLE', `metrics cannot listen on ${listen}: ${e.message}`)));
    server.listen(Number(listen.slice(at + 1)), host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    address: `${listen.slice(0, at)}:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
