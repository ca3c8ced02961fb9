// Owns what all Runtimes share: the worker threads (and a warm spare), the process-wide
// controller cap, idle eviction, the per-call registry the host-call bridge looks up, and
// the Runtime cache by hash with single-flight compilation. `close()` waits for all of it.
import { compileComponent, hashOf } from '../component/load.js';
import { PlughostError, messageOf } from '../errors.js';
import { KvOpError, type KvStore, type KvTransaction } from '../kv/types.js';
import type { InvocationContext } from './context.js';
import { effectiveLimits, resolveRuntimeOptions, type ModuleLimitsInput, type RuntimeOptions, type RuntimeOptionsInput } from './options.js';
import { Runtime, type RuntimeHostServices } from './runtime.js';
import { WorkerHost, type HostCallHandler } from './worker-host.js';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

export interface RuntimeManagerOptions extends RuntimeOptionsInput {
  /** The KV store behind the kv-* host imports; without one they answer err. */
  store?: KvStore;
  /** Where guest `log` calls go. */
  onGuestLog?(entry: { level: LogLevel; message: string; ctx: InvocationContext; module: string }): void;
  /** Told what the runtime does, for metrics; each hook is optional and must not throw. */
  observer?: RuntimeObserver;
}

export interface RuntimeObserver {
  /** A module was compiled (transpiled and its core modules compiled). */
  compiled?(seconds: number): void;
  /** A guest called a KV host import (`kvGet`, `kvSet`, ...). */
  kvOp?(op: string): void;
  /** A call's KV writes became durable, `seconds` after the call asked to commit. */
  kvCommitted?(seconds: number): void;
}

export interface LoadOptions {
  /** The module name: the KV scope for calls whose context names none. Defaults to the hash. */
  name?: string;
  limits?: ModuleLimitsInput;
}

interface CallState {
  ctx: InvocationContext;
  runtime: Runtime;
  access: InvocationContext['kvAccess'];
  txn?: KvTransaction;
}

const KV_OPS = new Set(['kvGet', 'kvSet', 'kvDel', 'kvExists', 'kvGetBatch', 'kvSetBatch', 'kvDelBatch', 'kvDelRange', 'kvKeys', 'kvEntries', 'kvCount']);

export interface ManagerStats {
  workers: number;
  workerRestarts: number;
  liveControllers: number;
  runtimes: number;
  compilations: number;
}

export class RuntimeManager implements RuntimeHostServices, HostCallHandler {
  readonly options: RuntimeOptions;
  readonly workers: WorkerHost[] = [];
  private spare: WorkerHost | undefined;
  private readonly runtimes = new Map<string, Runtime>();
  private readonly loading = new Map<string, Promise<Runtime>>();
  private readonly calls = new Map<number, CallState>();
  private nextCall = 1;
  private nextController = 1;
  private nextModule = 1;
  private nextWorker = 1;
  private liveControllers = 0;
  private workerRestarts = 0;
  private compilations = 0;
  private closing: Promise<void> | undefined;
  private readonly evictTimer: NodeJS.Timeout;

  private constructor(private readonly settings: RuntimeManagerOptions) {
    this.options = resolveRuntimeOptions(settings);
    for (let i = 0; i < this.options.workers; i++) this.workers.push(this.startWorker());
    this.spare = this.startWorker();
    this.evictTimer = setInterval(() => this.evictIdle(), Math.min(1000, Math.max(10, this.options.idleTimeoutMs / 2)));
    this.evictTimer.unref();
  }

  /** Starts the workers and waits until they can take requests. */
  static async create(options: RuntimeManagerOptions = {}): Promise<RuntimeManager> {
    const m = new RuntimeManager(options);
    try {
      await Promise.all([...m.workers, m.spare!].map((w) => w.ready));
    } catch (e) {
      await m.close();
      throw new PlughostError('INTERNAL', `runtime workers failed to start: ${messageOf(e)}`, { cause: e });
    }
    return m;
  }

  get acquireTimeoutMs(): number {
    return this.options.acquireTimeoutMs;
  }

  private startWorker(): WorkerHost {
    return new WorkerHost({
      id: this.nextWorker++,
      hostCallTimeoutMs: this.options.hostCallTimeoutMs,
      maxHeapMb: this.options.workerHeapMb,
      handler: this,
      onLost: (w) => this.replaceWorker(w),
    });
  }

  /** A lost worker's slot goes to the warm spare at once; a new spare starts behind it. */
  private replaceWorker(lost: WorkerHost): void {
    if (this.closing) return;
    if (lost === this.spare) {
      this.spare = this.startWorker();
      return;
    }
    const i = this.workers.indexOf(lost);
    if (i < 0) return;
    this.workerRestarts++;
    this.workers[i] = this.spare?.alive ? this.spare : this.startWorker();
    this.spare = this.startWorker();
    for (const r of this.runtimes.values()) r.workerLost(lost);
  }

  /** The Runtime for these bytes, compiled once however many callers ask at the same time. */
  async load(bytes: Uint8Array, options: LoadOptions = {}): Promise<Runtime> {
    if (this.closing) throw new PlughostError('UNAVAILABLE', 'the runtime is closing');
    const hash = hashOf(bytes);
    const existing = this.runtimes.get(hash) ?? this.loading.get(hash);
    if (existing) return existing;
    const limits = effectiveLimits(this.options.caps, options.limits);
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

  /** Called by a Runtime once a call's KV writes are durable. */
  committed(seconds: number): void {
    this.settings.observer?.kvCommitted?.(seconds);
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
  }

  stats(): ManagerStats {
    return {
      workers: this.workers.filter((w) => w.alive).length,
      workerRestarts: this.workerRestarts,
      liveControllers: this.liveControllers,
      runtimes: this.runtimes.size,
      compilations: this.compilations,
    };
  }

  // --- RuntimeHostServices ---

  nextControllerId(): number {
    return this.nextController++;
  }

  reserveController(requester: Runtime): void {
    if (this.liveControllers >= this.options.maxControllers) {
      let victim: Runtime | undefined;
      let oldest = Infinity;
      for (const r of this.runtimes.values()) {
        const t = r.oldestIdle();
        if (t !== undefined && t < oldest) [victim, oldest] = [r, t];
      }
      if (!victim || !victim.evictOldest()) {
        throw new PlughostError('POOL_EXHAUSTED', `the process-wide cap of ${this.options.maxControllers} live controllers is reached and none is idle (needed by ${requester.name})`);
      }
    }
    this.liveControllers++;
  }

  controllerGone(): void {
    this.liveControllers--;
  }

  beginCall(ctx: InvocationContext, runtime: Runtime, access: InvocationContext['kvAccess']) {
    const callId = this.nextCall++;
    const state: CallState = { ctx, runtime, access };
    this.calls.set(callId, state);
    return { callId, txn: () => state.txn };
  }

  endCall(callId: number): void {
    this.calls.delete(callId);
  }

  // --- HostCallHandler: runs on the main thread for a worker blocked in a host import ---

  async hostCall(callId: number, op: string, args: unknown[]): Promise<{ ok: unknown } | { err: string }> {
    const call = this.calls.get(callId);
    if (!call) return { err: `${op}: no call in progress` };
    if (!KV_OPS.has(op)) return { err: `${op} is not available: this caller serves no ${op === 'sql' ? 'queries' : 'plugin calls'}` };
    this.settings.observer?.kvOp?.(op);
    const store = this.settings.store;
    if (!store) return { err: `${op}: this server has no KV store` };
    if (call.access === 'none') return { err: `${op}: KV access denied: the caller has no KV permission` };
    try {
      call.txn ??= store.begin({ tenant: call.ctx.tenant, module: call.ctx.moduleName ?? call.runtime.name }, call.access, call.runtime.limits.kv);
      return { ok: await call.txn.apply(op, args) };
    } catch (e) {
      if (e instanceof KvOpError) return { err: e.message };
      throw e;
    }
  }

  log(callId: number, level: string, message: string): void {
    const call = this.calls.get(callId);
    if (call) this.settings.onGuestLog?.({ level: level as LogLevel, message: String(message).slice(0, 8192), ctx: call.ctx, module: call.runtime.name });
  }

  private evictIdle(): void {
    const olderThan = Date.now() - this.options.idleTimeoutMs;
    for (const r of this.runtimes.values()) r.evictIdle(olderThan);
  }

  /** Drains every Runtime's calls in flight, then stops all workers. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.evictTimer);
      await Promise.allSettled([...this.loading.values()]);
      await Promise.allSettled([...this.runtimes.values()].map((r) => r.close()));
      this.runtimes.clear();
      await Promise.allSettled([...this.workers, ...(this.spare ? [this.spare] : [])].map((w) => w.close()));
    })();
    return this.closing;
  }
}
