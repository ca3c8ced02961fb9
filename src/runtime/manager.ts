// The runtime as a library: compiles modules once (single-flight, by hash) into Runtimes,
// owns the worker pool, the process-wide controller cap and idle eviction, and serves
// the host calls that cross the bridge (KV of a store the workers cannot read, sql, run).
// `close()` is bounded: calls still running after the grace period fail with UNAVAILABLE
// and their workers are terminated.
import { compileComponent, hashOf } from '../component/load.js';
import { PlughostError, messageOf } from '../errors.js';
import { KvOpError, type KvStore } from '../kv/types.js';
import { KV_OPS, KV_WRITE_OPS, writeDenied } from '../kv/txn.js';
import type { BridgedCall, CallServices } from './call.js';
import { NestedCalls, type NestedHost } from './nested.js';
import type { InvocationContext } from './context.js';
import type { PoolHost } from './module-pool.js';
import { effectiveLimits, resolveRuntimeOptions, type ModuleLimitsInput, type RuntimeOptions, type RuntimeOptionsInput } from './options.js';
import { Runtime } from './runtime.js';
import type { HostCallHandler, WorkerHost } from './worker-host.js';
import { WorkerPool } from './worker-pool.js';
import { LogLimiter } from '../util/log-limiter.js';
import { within } from '../util/within.js';
import { workerOutputDropped } from '../util/worker-output.js';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

export type RuntimeManagerOptions = RuntimeOptionsInput & {
  /** The KV store behind the kv-* host imports; without one they answer err. */
  store?: KvStore;
  /**
   * Let workers read the store themselves when it allows (the embedded LMDB store does):
   * default true. False sends every KV operation over the host-call bridge, as for a
   * remote store.
   */
  kvInWorkers?: boolean;
  /** Where guest `log` calls go. */
  onGuestLog?(entry: { level: LogLevel; message: string; ctx: InvocationContext; module: string }): void;
  /** Told what the runtime does, for metrics; each hook is optional and must not throw. */
  observer?: RuntimeObserver;
};

export interface RuntimeObserver {
  /** A module was compiled (transpiled and its core modules compiled). */
  compiled?(seconds: number): void;
  /** A call's KV writes became durable, `seconds` after the call asked to commit. */
  kvCommitted?(seconds: number): void;
}

export interface LoadOptions {
  /** The module name: the KV scope for calls whose context names none. Defaults to the hash. */
  name?: string;
  limits?: ModuleLimitsInput;
}

export interface ManagerStats {
  workers: number;
  workerRestarts: number;
  /** Workers replaced because their heap stayed over workerRecycleHeapMb above where it started. */
  workerRecycles: number;
  /** Of those, the ones still finishing their calls. */
  workersRetiring: number;
  /** Guest `log` lines dropped over the rate limit, by module. */
  guestLogDropped: Record<string, number>;
  /** Lines workers printed themselves, dropped over the rate limit (process-wide, see util/worker-output.ts). */
  workerOutputDropped: number;
  /** Calls taken back from a worker busy with a long call and placed on another. */
  callsMoved: number;
  liveControllers: number;
  runtimes: number;
  compilations: number;
  /** KV operations guests made, by jco name (in workers and over the bridge). */
  kvOps: Record<string, number>;
}

/** Bytes of each worker's request and reply ring: calls and replies bigger than a quarter of it go by postMessage. */
const RING_BYTES = 1 << 20;
/** Longest guest log line kept, in characters. */
const MAX_LOG_LINE = 8192;
const KV_OP_SET = new Set(KV_OPS);

export class RuntimeManager implements PoolHost, CallServices, HostCallHandler, NestedHost {
  readonly options: RuntimeOptions;
  readonly store: KvStore | undefined;
  readonly kvInWorkers: boolean;
  private readonly pool: WorkerPool;
  private readonly runtimes = new Map<string, Runtime>();
  private readonly loading = new Map<string, Promise<Runtime>>();
  private readonly bridged = new Map<number, BridgedCall>();
  private readonly bridgedKvOps = new Map<string, number>();
  private readonly logLimiter: LogLimiter;
  private readonly nested = new NestedCalls(this);
  private nextCall = 1;
  private nextController = 1;
  private nextModule = 1;
  private liveControllers = 0;
  private compilations = 0;
  private closing: Promise<void> | undefined;
  private readonly evictTimer: NodeJS.Timeout;

  private constructor(private readonly settings: RuntimeManagerOptions) {
    const { store, kvInWorkers, onGuestLog: _l, observer: _o, ...options } = settings;
    this.options = resolveRuntimeOptions(options);
    this.store = store;
    this.kvInWorkers = kvInWorkers !== false && store?.local !== undefined;
    this.logLimiter = new LogLimiter(this.options.guestLogLinesPerSecond, this.options.guestLogBytesPerSecond);
    this.pool = new WorkerPool({
      count: this.options.workers,
      hostCallTimeoutMs: this.options.hostCallTimeoutMs,
      maxHeapMb: this.options.workerHeapMb,
      spinUs: this.options.workerSpinUs,
      ringBytes: RING_BYTES,
      recycleHeapBytes: this.options.workerRecycleHeapMb * 2 ** 20,
      kv: this.kvInWorkers ? store!.local : undefined,
      handler: this,
      onLost: (w) => {
        for (const r of this.runtimes.values()) r.workerLost(w);
      },
    });
    this.evictTimer = setInterval(() => this.evictIdle(), Math.min(1000, Math.max(10, this.options.idleTimeoutMs / 2)));
    this.evictTimer.unref();
  }

  /** Starts the workers and waits until they can take calls. */
  static async create(options: RuntimeManagerOptions = {}): Promise<RuntimeManager> {
    const m = new RuntimeManager(options);
    try {
      await m.pool.ready();
    } catch (e) {
      await m.close(0);
      throw e;
    }
    return m;
  }

  get workers(): readonly WorkerHost[] {
    return this.pool.workers;
  }

  get acquireTimeoutMs(): number {
    return this.options.acquireTimeoutMs;
  }

  get workerCount(): number {
    return this.options.workers;
  }

  get quarantineMs(): number {
    return this.options.quarantineMs;
  }

  get hostCallTimeoutMs(): number {
    return this.options.hostCallTimeoutMs;
  }

  get maxRunDepth(): number {
    return this.options.maxRunDepth;
  }

  get batchEntryMaxMs(): number {
    return this.options.batchEntryMaxMs;
  }

  /** The Runtime for these bytes, compiled once however many callers ask at the same time. */
  async load(bytes: Uint8Array, options: LoadOptions = {}): Promise<Runtime> {
    if (this.closing) throw new PlughostError('UNAVAILABLE', 'the runtime is closing');
    const hash = hashOf(bytes);
    const existing = this.runtimes.get(hash) ?? this.loading.get(hash);
    if (existing) return existing;
    const limits = effectiveLimits(this.options.limits, options.limits);
    const p = (async () => {
      this.compilations++;
      const t0 = performance.now();
      const component = await compileComponent(bytes, { maxMemoryBytes: limits.maxMemoryBytes });
      this.settings.observer?.compiled?.((performance.now() - t0) / 1000);
      const runtime = new Runtime(component, limits, this.nextModule++, options.name ?? hash, this);
      this.runtimes.set(hash, runtime);
      return runtime;
    })();
    this.loading.set(hash, p);
    try {
      return await p;
    } finally {
      this.loading.delete(hash);
    }
  }

  /** Every Runtime loaded now. */
  loaded(): IterableIterator<Runtime> {
    return this.runtimes.values();
  }

  get(hash: string): Runtime | undefined {
    return this.runtimes.get(hash);
  }

  /** Waits for the module's calls in flight, then frees its controllers and artifacts. */
  async unload(hash: string): Promise<void> {
    const r = this.runtimes.get(hash);
    if (!r) return;
    this.runtimes.delete(hash);
    await r.close();
    r.unloadFrom(this.pool.workers);
  }

  stats(): ManagerStats {
    const kvOps = this.pool.kvOps();
    for (const [op, n] of this.bridgedKvOps) kvOps[op] = (kvOps[op] ?? 0) + n;
    return {
      workers: this.pool.alive,
      workerRestarts: this.pool.restarts,
      workerRecycles: this.pool.recycled,
      workersRetiring: this.pool.retiring.size,
      guestLogDropped: Object.fromEntries(this.logLimiter.dropped),
      workerOutputDropped: workerOutputDropped(),
      callsMoved: this.pool.callsMoved,
      liveControllers: this.liveControllers,
      runtimes: this.runtimes.size,
      compilations: this.compilations,
      kvOps,
    };
  }

  // --- PoolHost ---

  nextControllerId(): number {
    return this.nextController++;
  }

  reserveController(requester: string): void {
    if (this.liveControllers >= this.options.maxControllers) {
      let victim: Runtime | undefined;
      let oldest = Infinity;
      for (const r of this.runtimes.values()) {
        const t = r.oldestIdle();
        if (t !== undefined && t < oldest) [victim, oldest] = [r, t];
      }
      if (!victim || !victim.evictOldest()) {
        throw new PlughostError('POOL_EXHAUSTED', `the process-wide cap of ${this.options.maxControllers} live controllers is reached and none is idle (needed by ${requester})`);
      }
    }
    this.liveControllers++;
  }

  controllerGone(): void {
    this.liveControllers--;
  }

  // --- CallServices ---

  beginBridgedCall(state: BridgedCall): number {
    const callId = this.nextCall++;
    this.bridged.set(callId, state);
    return callId;
  }

  endBridgedCall(callId: number): void {
    // a sql it is still waiting for (its worker was stopped, say) is given up now
    this.bridged.get(callId)?.ended?.abort();
    this.bridged.delete(callId);
  }

  committed(seconds: number): void {
    this.settings.observer?.kvCommitted?.(seconds);
  }

  // --- HostCallHandler: runs on the main thread for a worker blocked in a host import ---

  async hostCall(callId: number, op: string, args: unknown[]): Promise<{ ok: unknown } | { err: string }> {
    const call = this.bridged.get(callId);
    if (!call) return { err: `${op}: no call in progress` };
    switch (op) {
      case 'sql':
        return this.sql(call, args);
      // the worker's side of `run` (worker/nested-run.ts): never a guest's own import
      case 'runBegin':
        return this.nested.begin(call, String(args[0]), args[1] === undefined ? undefined : String(args[1]));
      case 'runWriteable':
        return this.nested.writeable(call, callId, args[0] === true);
      case 'runEnd':
        return this.nested.end(call, args[0] as number, args[1] as number, args[2] === true, args[3] as boolean | undefined, args[4] === true);
      case 'runCommits':
        return this.nested.commits(call, args[0] as number, args[1] as Parameters<NestedCalls['commits']>[2]);
    }
    if (!KV_OP_SET.has(op)) return { err: `${op} is not available here` };
    this.bridgedKvOps.set(op, (this.bridgedKvOps.get(op) ?? 0) + 1);
    const store = this.store;
    if (!store) return { err: `${op}: this server has no KV store` };
    try {
      // the calls of one tree share one transaction per scope (nested.ts), each with its own access
      if (call.tree) {
        if (KV_WRITE_OPS.has(op) && call.access !== 'write') throw new KvOpError(writeDenied(op));
        return { ok: await this.inTime(call, op, call.tree.txnFor(store, call.scope, call.access, call.runtime.limits.kv, call.lockHeld).apply(op, args)) };
      }
      call.txn ??= store.begin(call.scope, call.access, call.runtime.limits.kv, { lockHeld: call.lockHeld });
      return { ok: await this.inTime(call, op, call.txn.apply(op, args)) };
    } catch (e) {
      if (e instanceof KvOpError) return { err: e.message };
      throw e;
    }
  }

  /**
   * A KV operation over the bridge answers within hostCallTimeoutMs (the guest stops waiting
   * then). One that has not by then may still land in its transaction: the call must not
   * commit, so its tree (or the call) is marked failed and the guest gets err.
   */
  private inTime<T>(call: BridgedCall, op: string, p: Promise<T>): Promise<T> {
    const ms = this.options.hostCallTimeoutMs;
    return within(p, ms, () => {
      const e = new PlughostError('UNAVAILABLE', `${op}: the KV store gave no answer within hostCallTimeoutMs (${ms} ms); nothing the call wrote is committed`);
      (call.tree ?? call).kvFailure ??= e;
      return new KvOpError(e.message);
    });
  }

  /** A guest's `sql`: asks whoever the call's context names, within hostCallTimeoutMs and the call's own time. */
  private async sql(call: BridgedCall, args: unknown[]): Promise<{ ok: unknown } | { err: string }> {
    const answer = call.ctx.sql;
    if (!answer) return { err: 'sql is not available: only an engine that opened a Stream serving queries (StreamOptions.serve_sql) answers sql; Invoke and other streams do not' };
    const [query, vars] = args as [string, Uint8Array];
    // bounded by the call's own time too, ending a little before it: the guest gets err, not the watchdog's TIMEOUT
    const left = call.endsAt() - (performance.timeOrigin + performance.now());
    const timeoutMs = Math.floor(Math.min(this.options.hostCallTimeoutMs, Number.isNaN(left) ? Infinity : left - Math.min(100, left / 10)));
    if (!(timeoutMs > 0)) return { err: 'sql: the call has no time left to wait for an answer' };
    const giveUp = new AbortController();
    const outer = call.ctx.signal;
    const onAbort = () => giveUp.abort();
    outer?.addEventListener('abort', onAbort, { once: true });
    // the call may end without the guest giving up (its worker stopped): then so does the wait
    call.ended = giveUp;
    try {
      // the answerer never throws: only the wait's end does
      return await within(answer({ query: String(query), vars, row: call.row(), timeoutMs, signal: giveUp.signal }), timeoutMs, () => new Error(`sql got no answer from the engine within ${timeoutMs} ms`));
    } catch (e) {
      return { err: messageOf(e) };
    } finally {
      outer?.removeEventListener('abort', onAbort);
      giveUp.abort();
    }
  }

  log(callId: number, level: string, message: string): void {
    const call = this.bridged.get(callId);
    if (!call) return;
    const line = String(message).slice(0, MAX_LOG_LINE);
    if (this.logLimiter.admit(call.runtime.name, Buffer.byteLength(line))) this.settings.onGuestLog?.({ level: level as LogLevel, message: line, ctx: call.ctx, module: call.runtime.name });
  }

  private evictIdle(): void {
    const olderThan = Date.now() - this.options.idleTimeoutMs;
    for (const r of this.runtimes.values()) r.evictIdle(olderThan);
  }

  /**
   * Stops taking calls and lets those in flight finish for up to `graceMs` (default:
   * shutdownGraceMs); then stops every worker, which fails calls still running with
   * UNAVAILABLE. Idempotent.
   */
  close(graceMs = this.options.shutdownGraceMs): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.evictTimer);
      await Promise.allSettled([...this.loading.values()]);
      const deadline = Date.now() + graceMs;
      await Promise.allSettled([...this.runtimes.values()].map((r) => r.close(Math.max(0, deadline - Date.now()))));
      this.runtimes.clear();
      await this.pool.close();
    })();
    return this.closing;
  }
}
