// One Runtime per module hash: its compiled artifacts, limits, pool of idle controllers
// and a semaphore. Seed semantics: permits are held only by checked-out controllers;
// idle controllers hold none; maxPoolSize bounds the pool and the number in use; a
// controller whose state is in doubt (trap, timeout, memory, init failure) is dropped.
import { Sema } from 'async-sema';
import type { CompiledComponent, PluginExport } from '../component/load.js';
import { PlughostError, isPlughostError } from '../errors.js';
import type { KvTransaction } from '../kv/types.js';
import { lowerAccess, type InvocationContext } from './context.js';
import { compactBytes } from './compact.js';
import { Controller, type DropReason } from './controller.js';
import type { ModuleLimits } from './options.js';
import type { FailureKind } from './protocol.js';
import { WorkerLostError, type Reply, type WorkerHost } from './worker-host.js';

export type InvokeResult = { ok: true; value: Uint8Array } | { ok: false; guestError: string };

export interface FunctionInfo {
  name: string | undefined;
  args: [string, string][];
  returns: string;
  writeable: boolean;
  comment: string | undefined;
}

export interface PoolStats {
  idle: number;
  inUse: number;
  waiters: number;
  created: number;
  reused: number;
  dropped: Record<DropReason, number>;
  evicted: number;
}

/** What a Runtime needs from whoever owns the workers (RuntimeManager). */
export interface RuntimeHostServices {
  readonly workers: readonly WorkerHost[];
  nextControllerId(): number;
  /** Makes room for one more live controller under the process-wide cap (may evict elsewhere). */
  reserveController(requester: Runtime): void;
  controllerGone(): void;
  /** Registers a call so its worker's host calls find the context; returns the call id. */
  beginCall(ctx: InvocationContext, runtime: Runtime, access: InvocationContext['kvAccess']): { callId: number; txn(): KvTransaction | undefined };
  endCall(callId: number): void;
  /** A call's KV writes are durable, `seconds` after it asked to commit (for metrics). */
  committed(seconds: number): void;
  readonly acquireTimeoutMs: number;
}

const FAILURE_CODE: Record<Exclude<FailureKind, 'guest'>, { code: 'TRAP' | 'MEMORY_LIMIT' | 'INIT_FAILED'; reason: DropReason }> = {
  trap: { code: 'TRAP', reason: 'trap' },
  memory: { code: 'MEMORY_LIMIT', reason: 'memory' },
  init: { code: 'INIT_FAILED', reason: 'init' },
};

export class Runtime {
  readonly hash: string;
  /** Default KV scope name (the registry passes the module name per call). */
  readonly name: string;
  /** This module's id in worker messages (load, create, unload), given by the manager. */
  readonly moduleId: number;
  private readonly sema: Sema;
  private readonly idle: Controller[] = [];
  private readonly live = new Set<Controller>();
  private readonly byWorker = new Map<WorkerHost, Set<Controller>>();
  private inUse = 0;
  /** Callers waiting for a permit (the semaphore also counts waiters that gave up). */
  private waiting = 0;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly writeable = new Map<string | undefined, boolean>();
  private functions: Promise<FunctionInfo[]> | undefined;
  private closed = false;
  private readonly counters = { created: 0, reused: 0, evicted: 0, dropped: { trap: 0, timeout: 0, memory: 0, init: 0, other: 0 } };
  /** Permits: controllers in use at once (several may share a worker and queue there). */
  readonly poolSize: number;

  constructor(
    readonly component: CompiledComponent,
    readonly limits: ModuleLimits,
    moduleId: number,
    name: string,
    private readonly host: RuntimeHostServices,
  ) {
    this.hash = component.hash;
    this.moduleId = moduleId;
    this.name = name;
    this.poolSize = limits.maxPoolSize;
    this.sema = new Sema(this.poolSize);
  }

  stats(): PoolStats {
    return {
      idle: this.idle.length,
      inUse: this.inUse,
      waiters: this.waiting,
      created: this.counters.created,
      reused: this.counters.reused,
      dropped: { ...this.counters.dropped },
      evicted: this.counters.evicted,
    };
  }

  /** Calls `invoke` once: acquire -> call -> release (or drop), in one KV transaction. */
  invoke(ctx: InvocationContext, fn: string | undefined, args: Uint8Array): Promise<InvokeResult> {
    if (this.closed) return Promise.reject(new PlughostError('UNAVAILABLE', 'the runtime is closing'));
    const p = this.invokeRetrying(ctx, fn, args);
    this.inflight.add(p);
    const forget = () => this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  /**
   * A call whose worker was lost before it started (another call's timeout killed it, while
   * this one queued or while its new controller started) ran nothing of itself: run it
   * again, on a new controller, until its deadline or acquireTimeoutMs.
   */
  private async invokeRetrying(ctx: InvocationContext, fn: string | undefined, args: Uint8Array): Promise<InvokeResult> {
    const retryUntil = Math.min(this.deadlineOf(ctx), Date.now() + this.host.acquireTimeoutMs);
    for (;;) {
      try {
        return await this.invokeOnce(ctx, fn, args);
      } catch (e) {
        if (!(e instanceof WorkerLostError) || Date.now() >= retryUntil) throw e;
      }
    }
  }

  private async invokeOnce(ctx: InvocationContext, fn: string | undefined, args: Uint8Array): Promise<InvokeResult> {
    const deadline = this.deadlineOf(ctx);
    const controller = await this.acquire(ctx, { deadline });
    let access = ctx.kvAccess;
    let call: ReturnType<RuntimeHostServices['beginCall']> | undefined;
    try {
      if (access === 'write' && this.component.exports.has('functionWriteable')) {
        access = lowerAccess(access, (await this.isWriteable(controller, fn, deadline, ctx.signal)) ? 'write' : 'read');
      }
      call = this.host.beginCall(ctx, this, access);
      const reply = await this.run(controller, 'invoke', [fn, compactBytes(args)], deadline, ctx.signal, call.callId);
      if (reply.t === 'done') {
        this.release(controller);
        const txn = call.txn();
        if (txn) {
          const t0 = performance.now();
          await txn.commit();
          this.host.committed((performance.now() - t0) / 1000);
        }
        return { ok: true, value: reply.value as Uint8Array };
      }
      call.txn()?.rollback();
      if (reply.kind === 'guest') {
        this.release(controller);
        return { ok: false, guestError: reply.message };
      }
      const { code, reason } = FAILURE_CODE[reply.kind];
      this.drop(controller, reason);
      throw new PlughostError(code, reply.message);
    } catch (e) {
      call?.txn()?.rollback();
      this.settleAfterError(controller, e);
      throw e;
    } finally {
      if (call) this.host.endCall(call.callId);
    }
  }

  /** After an exception, the controller is either already handled or must be dropped. */
  private settleAfterError(c: Controller, e: unknown): void {
    if (!this.live.has(c)) return;
    if (isPlughostError(e, 'TIMEOUT')) this.drop(c, 'timeout');
    else if (isPlughostError(e, 'MEMORY_LIMIT')) this.drop(c, 'memory');
    else if (isPlughostError(e, 'CANCELLED') && !c.lost) this.release(c);
    else this.drop(c, e instanceof WorkerLostError ? 'other' : 'trap');
  }

  /** The caller's deadline; without one, only the module's time limit bounds a call. */
  private deadlineOf(ctx: Pick<InvocationContext, 'deadline'>): number {
    return ctx.deadline ?? Infinity;
  }

  /** One request on a controller, bounded by the module's time limit and the caller's deadline. */
  private run(c: Controller, fn: PluginExport, args: unknown[], deadline: number, signal: AbortSignal | undefined, callId = 0): Promise<Reply> {
    const timeLimit = Math.min(this.limits.maxExecutionMs, deadline - Date.now());
    if (timeLimit <= 0) return Promise.reject(new PlughostError('TIMEOUT', 'the deadline passed before the call could start'));
    c.calls++;
    return c.worker.request({ t: 'call', controllerId: c.id, fn, args, callId }, timeLimit, signal);
  }

  /** Checks out a controller: a permit first (bounded by the deadline and acquireTimeoutMs), then an idle or a new controller. */
  async acquire(ctx: Pick<InvocationContext, 'signal'>, options: { deadline: number }): Promise<Controller> {
    if (this.closed) throw new PlughostError('UNAVAILABLE', 'the runtime is closing');
    await this.permit(options.deadline, ctx.signal);
    try {
      const reused = this.takeIdle();
      if (reused) {
        this.counters.reused++;
        this.inUse++;
        return reused;
      }
      const created = await this.create(options.deadline, ctx.signal);
      this.inUse++;
      return created;
    } catch (e) {
      this.sema.release();
      throw e;
    }
  }

  /** Returns a healthy controller to the pool (LIFO) and its permit to the semaphore. */
  release(c: Controller): void {
    if (!this.live.has(c)) return;
    this.inUse--;
    this.sema.release();
    c.lastUsed = Date.now();
    if (c.lost) return this.forget(c, 'other');
    if (this.idle.length + this.inUse >= this.limits.maxPoolSize) return this.forget(c, 'other');
    this.idle.push(c);
  }

  /** Discards a checked-out controller whose state is in doubt. */
  drop(c: Controller, reason: DropReason): void {
    if (!this.live.has(c)) return;
    this.inUse--;
    this.sema.release();
    this.forget(c, reason);
  }

  private forget(c: Controller, reason: DropReason | 'evicted'): void {
    this.live.delete(c);
    const onWorker = this.byWorker.get(c.worker);
    onWorker?.delete(c);
    if (onWorker?.size === 0) this.byWorker.delete(c.worker);
    if (reason === 'evicted') this.counters.evicted++;
    else this.counters.dropped[reason]++;
    if (!c.lost) c.worker.send({ t: 'drop', controllerId: c.id });
    this.host.controllerGone();
  }

  private async permit(deadline: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw new PlughostError('CANCELLED', 'the caller cancelled');
    // the common case, a free permit: no timer, no race, no listener
    if (this.sema.tryAcquire() !== undefined) return;
    const waitMs = Math.min(deadline - Date.now(), this.host.acquireTimeoutMs);
    let settled = false;
    const acquired = this.sema.acquire();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    this.waiting++;
    try {
      await Promise.race([
        acquired,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new PlughostError('POOL_EXHAUSTED', `no controller of ${this.hash.slice(0, 19)}… became free within ${Math.max(0, waitMs)} ms (${this.poolSize} in use)`)),
            Math.max(0, waitMs),
          );
          if (signal) {
            onAbort = () => reject(new PlughostError('CANCELLED', 'the caller cancelled while waiting for a controller'));
            signal.addEventListener('abort', onAbort, { once: true });
          }
        }),
      ]);
      settled = true;
    } finally {
      this.waiting--;
      clearTimeout(timer);
      if (onAbort) signal!.removeEventListener('abort', onAbort);
      // a waiter that gave up still holds its place in the semaphore: hand the permit straight back
      if (!settled) void acquired.then(() => this.sema.release());
    }
  }

  /**
   * The most recently used idle controller whose worker is free. When every idle one sits
   * on a busy worker (its call would queue behind another), a new controller on a free
   * worker is better, if the pool has room; otherwise the one on the cheapest worker (see
   * WorkerHost.cost: never behind a call that has run long, while another worker will do).
   */
  private takeIdle(): Controller | undefined {
    let best = -1;
    let bestCost = Infinity;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const worker = this.idle[i]!.worker;
      if (worker.load === 0) return this.idle.splice(i, 1)[0];
      const cost = worker.cost;
      if (cost < bestCost) [best, bestCost] = [i, cost];
    }
    const roomForOneMore = this.live.size < this.poolSize;
    const bestStalled = best >= 0 && this.idle[best]!.worker.stalled;
    if (roomForOneMore && this.host.workers.some((w) => w.alive && (w.load === 0 || (bestStalled && !w.stalled)))) return undefined;
    return best < 0 ? undefined : this.idle.splice(best, 1)[0];
  }

  private async create(deadline: number, signal?: AbortSignal): Promise<Controller> {
    const worker = cheapest(this.host.workers);
    if (!worker) throw new PlughostError('UNAVAILABLE', 'no runtime worker is alive');
    this.host.reserveController(this);
    const c = new Controller(this.host.nextControllerId(), worker);
    this.live.add(c);
    let onWorker = this.byWorker.get(worker);
    if (!onWorker) this.byWorker.set(worker, (onWorker = new Set()));
    onWorker.add(c);
    if (!worker.loaded.has(this.moduleId)) {
      worker.send({ t: 'load', moduleId: this.moduleId, glue: this.component.glue, coreModules: this.component.coreModules, maxMemoryBytes: this.component.maxMemoryBytes });
      worker.loaded.add(this.moduleId);
    }
    const timeLimit = Math.min(this.limits.maxExecutionMs, deadline - Date.now());
    let reply: Reply;
    try {
      if (timeLimit <= 0) throw new PlughostError('TIMEOUT', 'the deadline passed before a controller could be started');
      reply = await worker.request({ t: 'create', controllerId: c.id, moduleId: this.moduleId, runInit: this.component.exports.has('init') }, timeLimit, signal);
    } catch (e) {
      this.forget(c, isPlughostError(e, 'TIMEOUT') ? 'timeout' : isPlughostError(e, 'MEMORY_LIMIT') ? 'memory' : 'other');
      throw e;
    }
    if (reply.t === 'failed') {
      const { code, reason } = FAILURE_CODE[reply.kind === 'guest' ? 'init' : reply.kind];
      this.forget(c, reason);
      throw new PlughostError(code, code === 'INIT_FAILED' ? `init failed: ${reply.message}` : `starting a controller failed: ${reply.message}`);
    }
    this.counters.created++;
    return c;
  }

  private async isWriteable(c: Controller, fn: string | undefined, deadline: number, signal?: AbortSignal): Promise<boolean> {
    const known = this.writeable.get(fn);
    if (known !== undefined) return known;
    const reply = await this.run(c, 'functionWriteable', [fn], deadline, signal);
    if (reply.t === 'failed' && reply.kind !== 'guest') {
      throw new PlughostError(FAILURE_CODE[reply.kind].code, `function-writeable failed: ${reply.message}`);
    }
    // an unknown function (err) gets read-only KV; its invoke will answer for itself
    const w = reply.t === 'done' && reply.value === true;
    this.writeable.set(fn, w);
    return w;
  }

  /** The module's functions from its introspection exports; absent exports give empty answers. Cached. */
  describe(ctx: Pick<InvocationContext, 'signal' | 'deadline'> = {}): Promise<FunctionInfo[]> {
    this.functions ??= this.introspect(ctx).catch((e) => {
      this.functions = undefined;
      throw e;
    });
    return this.functions;
  }

  private async introspect(ctx: Pick<InvocationContext, 'signal' | 'deadline'>): Promise<FunctionInfo[]> {
    const has = (e: PluginExport) => this.component.exports.has(e);
    if (!has('listFunctions')) return [];
    const deadline = this.deadlineOf(ctx);
    const c = await this.acquire(ctx, { deadline });
    try {
      const ask = async (fn: PluginExport, args: unknown[]): Promise<unknown> => {
        if (!has(fn)) return undefined;
        const reply = await this.run(c, fn, args, deadline, ctx.signal);
        if (reply.t === 'done') return reply.value;
        if (reply.kind === 'guest') return undefined;
        throw new PlughostError(FAILURE_CODE[reply.kind].code, `${fn} failed: ${reply.message}`);
      };
      const names = ((await ask('listFunctions', [])) as (string | undefined)[] | undefined) ?? [];
      const out: FunctionInfo[] = [];
      for (const name of names) {
        const writeable = (await ask('functionWriteable', [name])) === true;
        this.writeable.set(name, writeable);
        out.push({
          name: name ?? undefined,
          args: ((await ask('functionArgs', [name])) as [string, string][] | undefined) ?? [],
          returns: ((await ask('functionReturns', [name])) as string | undefined) ?? '',
          writeable,
          comment: ((await ask('functionComment', [name])) as string | undefined) ?? undefined,
        });
      }
      this.release(c);
      return out;
    } catch (e) {
      this.settleAfterError(c, e);
      throw e;
    }
  }

  /** Its worker is gone: the instance with it. Checked-out ones are settled by their call. */
  workerLost(worker: WorkerHost): void {
    const onWorker = this.byWorker.get(worker);
    if (!onWorker) return;
    this.byWorker.delete(worker);
    for (const c of onWorker) {
      c.lost = true;
      const i = this.idle.indexOf(c);
      if (i >= 0) {
        this.idle.splice(i, 1);
        this.forget(c, 'other');
      }
    }
  }

  /** Evicts idle controllers unused since `olderThan` (epoch ms); returns how many. */
  evictIdle(olderThan: number): number {
    let n = 0;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const c = this.idle[i]!;
      if (c.lastUsed < olderThan) {
        this.idle.splice(i, 1);
        this.forget(c, 'evicted');
        n++;
      }
    }
    return n;
  }

  /** The least recently used idle controller's last use, for the process-wide LRU. */
  oldestIdle(): number | undefined {
    return this.idle.length ? Math.min(...this.idle.map((c) => c.lastUsed)) : undefined;
  }

  evictOldest(): boolean {
    const t = this.oldestIdle();
    if (t === undefined) return false;
    return this.evictIdle(t + 1) > 0;
  }

  /** Stops taking calls, waits for those in flight, then drops every controller. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    for (const c of this.idle.splice(0)) this.forget(c, 'evicted');
    for (const w of this.host.workers) if (w.loaded.delete(this.moduleId)) w.send({ t: 'unload', moduleId: this.moduleId });
  }
}

/** The live worker a new request would wait least on. */
function cheapest(workers: readonly WorkerHost[]): WorkerHost | undefined {
  let best: WorkerHost | undefined;
  let bestCost = Infinity;
  for (const w of workers) {
    if (!w.alive) continue;
    const cost = w.cost;
    if (cost < bestCost) [best, bestCost] = [w, cost];
  }
  return best;
}
