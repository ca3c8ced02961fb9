// One Runtime per module hash: its compiled artifacts, its limits, its pool, and what it
// learned of itself (its functions, which of them may write). Compiled once, shared by
// all calls. Each call is a Call (call.ts); this class only hands calls their parts.
import type { CompiledComponent } from '../component/load.js';
import { PlughostError, isPlughostError, messageOf } from '../errors.js';
import { KV_WRITE_IMPORTS } from '../kv/txn.js';
import { runCall, type CallServices, type RowOutcome } from './call.js';
import { runBatch } from './batch.js';
import type { InvocationContext } from './context.js';
import type { Controller } from './controller.js';
import { ModulePool, type PoolHost, type PoolStats } from './module-pool.js';
import type { ModuleLimits } from './options.js';
import { Quarantine } from './quarantine.js';
import type { ControlMessage } from './protocol.js';
import { STATUS } from './shared/wire.js';
import type { WorkerHost } from './worker-host.js';

export type InvokeResult = { ok: true; value: Uint8Array } | { ok: false; guestError: string };
export type { RowOutcome };
export type { PoolStats };

export interface FunctionInfo {
  name: string | undefined;
  args: [string, string][];
  returns: string;
  writeable: boolean;
  comment: string | undefined;
}

/** Function names a caller may choose: the writeable cache keeps at most this many. */
const MAX_CACHED_NAMES = 256;

export class Runtime {
  readonly hash: string;
  /** Default KV scope name (the registry passes the module name per call). */
  readonly name: string;
  readonly pool: ModulePool;
  /** Permits: controllers in use at once. */
  readonly poolSize: number;
  /** The module imports a KV write: its writing calls take their scope's lock. */
  readonly writesKv: boolean;
  /** The module imports KV at all. */
  readonly usesKv: boolean;
  /** The module imports what only the main thread serves (log, sql, run). */
  readonly usesBridge: boolean;
  /** The module imports `run`: its calls may make calls of other modules (nested.ts). */
  readonly callsRun: boolean;
  /** Where its calls wait after one of them ran past its time limit. */
  readonly quarantine: Quarantine;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly writeable = new Map<string | undefined, boolean>();
  private functions: Promise<FunctionInfo[]> | undefined;
  closed = false;

  constructor(
    readonly component: CompiledComponent,
    readonly limits: ModuleLimits,
    /** This module's id in worker messages (load, unload), given by the manager. */
    readonly moduleId: number,
    name: string,
    private readonly services: CallServices & PoolHost,
  ) {
    this.hash = component.hash;
    this.name = name;
    this.poolSize = limits.maxPoolSize;
    this.writesKv = KV_WRITE_IMPORTS.some((i) => component.hostImports.has(i));
    this.usesKv = [...component.hostImports].some((i) => i.startsWith('kv-'));
    this.usesBridge = ['log', 'sql', 'run'].some((i) => component.hostImports.has(i));
    this.callsRun = component.hostImports.has('run');
    this.quarantine = new Quarantine(Math.max(1, services.workerCount - 1), services.quarantineMs);
    this.pool = new ModulePool(limits.maxPoolSize, `${this.hash.slice(0, 19)}…`, services, (c) => c.worker.drop(c.id));
  }

  stats(): PoolStats {
    return this.pool.stats();
  }

  /** Calls `invoke` once: acquire -> call -> release (or drop), in one KV transaction. */
  invoke(ctx: InvocationContext, fn: string | undefined, args: Uint8Array): Promise<InvokeResult> {
    return this.track(async () => {
      const reply = await runCall(this, this.services, ctx, { fn: 'invoke', name: fn, args });
      return reply.status === STATUS.OK ? { ok: true, value: reply.value as Uint8Array } : { ok: false, guestError: String(reply.value) };
    });
  }

  /**
   * Calls `fn` once per row: one outcome per row, in row order. A row that fails never
   * fails its neighbours. Each row is its own call (own KV transaction and time limit),
   * unless the module exports `invoke-batch`: then one entry takes the rows (see batch.ts).
   */
  invokeBatch(ctx: InvocationContext, fn: string | undefined, rows: readonly Uint8Array[]): Promise<RowOutcome[]> {
    if (!((this.usesKv || this.callsRun) && !this.services.kvInWorkers)) return this.track(() => runBatch(this, this.services, ctx, fn, rows));
    // KV the workers cannot read goes over the bridge, one transaction (a call tree's, with run) per
    // call: so one call per row, at most poolSize at once (each holds a controller and a database
    // connection; more would only wait for them, and a large batch would take every connection of the replica)
    return this.track(() =>
      mapBounded(rows, this.poolSize, (args) =>
        this.invoke(ctx, fn, args).catch((e: unknown): RowOutcome => ({ ok: false, failure: isPlughostError(e) ? e : new PlughostError('INTERNAL', messageOf(e), { cause: e }) })),
      ),
    );
  }

  /** The module's functions from its introspection exports (one hand-off); absent exports give empty answers. Cached. */
  describe(ctx: Pick<InvocationContext, 'signal' | 'deadline'> = {}): Promise<FunctionInfo[]> {
    if (!this.component.exports.has('listFunctions')) return Promise.resolve([]);
    this.functions ??= this.track(async () => {
      const reply = await runCall(this, this.services, { subject: '(describe)', tenant: '(describe)', kvAccess: 'none', ...ctx }, { fn: 'describe' });
      const raw = reply.value as { name: string | null; args: [string, string][]; returns: string; writeable: boolean; comment: string | null }[];
      const out = raw.map((f) => ({ name: f.name ?? undefined, args: f.args, returns: f.returns, writeable: f.writeable, comment: f.comment ?? undefined }));
      for (const f of out) this.rememberWriteable(f.name, f.writeable);
      return out;
    }).catch((e) => {
      this.functions = undefined;
      throw e;
    });
    return this.functions;
  }

  /** Function names whose `function-writeable` answer is cached (at most 256). */
  get cachedFunctionNames(): number {
    return this.writeable.size;
  }

  /** Whether `function-writeable` said yes for this name, if it was asked. */
  knownWriteable(name: string | undefined): boolean | undefined {
    return this.writeable.get(name);
  }

  rememberWriteable(name: string | undefined, writeable: boolean): void {
    if (!this.writeable.has(name) && this.writeable.size >= MAX_CACHED_NAMES) this.writeable.delete(this.writeable.keys().next().value);
    this.writeable.set(name, writeable);
  }

  /** What a worker needs before it can instantiate this module. */
  loadMessage(): Extract<ControlMessage, { t: 'load' }> {
    const c = this.component;
    return { t: 'load', moduleId: this.moduleId, glue: c.glue, coreModules: c.coreModules, maxMemoryBytes: c.maxMemoryBytes, kvLimits: this.limits.kv, directInvoke: c.directInvoke, callsRun: this.callsRun };
  }

  /** Checks out a controller, holding one permit until `release` (for tests and embedders that need to hold the pool). */
  acquire(ctx: Pick<InvocationContext, 'signal'>, options: { deadline: number }): Promise<Controller> {
    if (this.closed) return Promise.reject(new PlughostError('UNAVAILABLE', 'the runtime is closing'));
    return this.pool.acquire(options.deadline, ctx.signal, this.services.acquireTimeoutMs);
  }

  release(c: Controller): void {
    this.pool.release(c);
  }

  private track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new PlughostError('UNAVAILABLE', 'the runtime is closing'));
    const p = fn();
    this.inflight.add(p);
    const forget = () => this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Its worker is gone: the instances with it. */
  workerLost(worker: WorkerHost): void {
    this.pool.workerLost(worker);
  }

  evictIdle(olderThan: number): number {
    return this.pool.evictIdle(olderThan);
  }

  oldestIdle(): number | undefined {
    return this.pool.oldestIdle();
  }

  evictOldest(): boolean {
    const t = this.pool.oldestIdle();
    return t !== undefined && this.pool.evictIdle(t + 1) > 0;
  }

  /** Stops taking calls and waits (up to `graceMs`) for those in flight; then drops every idle controller. */
  async close(graceMs = Infinity): Promise<boolean> {
    this.closed = true;
    const drained = await settledWithin([...this.inflight], graceMs);
    this.pool.clear();
    return drained;
  }

  /** Forgets the module in every worker (after close). */
  unloadFrom(workers: readonly WorkerHost[]): void {
    for (const w of workers) w.unloadModule(this.moduleId);
  }
}

/** `fn` over `items` with at most `limit` running at once; results in item order. `fn` must not throw. */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return out;
}

/** Whether all of `ps` settled within `ms`. */
export async function settledWithin(ps: Promise<unknown>[], ms: number): Promise<boolean> {
  if (ps.length === 0) return true;
  const all = Promise.allSettled(ps).then(() => true);
  if (!Number.isFinite(ms)) return all;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([all, late]);
  } finally {
    clearTimeout(timer);
  }
}
