// One module's pool, exactly the seed's semantics: idle controllers wait for reuse (LIFO,
// so the hot set stays small); a semaphore of maxPoolSize permits is held only by
// checked-out controllers; maxPoolSize bounds the pool and the number in use; a waiter
// that gets no permit before its deadline fails with POOL_EXHAUSTED, never hangs.
import { Sema } from 'async-sema';
import { PlughostError } from '../errors.js';
import { Controller, type DropReason } from './controller.js';
import type { WorkerHost } from './worker-host.js';

export interface PoolStats {
  idle: number;
  inUse: number;
  waiters: number;
  created: number;
  reused: number;
  dropped: Record<DropReason, number>;
  evicted: number;
}

/** What a pool needs from the process: worker placement and the process-wide controller cap. */
export interface PoolHost {
  readonly workers: readonly WorkerHost[];
  nextControllerId(): number;
  /** Makes room for one more live controller under the process-wide cap (may evict elsewhere). */
  reserveController(requester: string): void;
  controllerGone(): void;
}

export class ModulePool {
  private readonly sema: Sema;
  private readonly idle: Controller[] = [];
  private readonly live = new Set<Controller>();
  private inUse = 0;
  /** Callers waiting for a permit (the semaphore also counts waiters that gave up). */
  private waiting = 0;
  private readonly counters = { created: 0, reused: 0, evicted: 0, dropped: { trap: 0, timeout: 0, memory: 0, init: 0, other: 0 } };

  constructor(
    readonly size: number,
    private readonly label: string,
    private readonly host: PoolHost,
    /** Tells the worker to forget an instance (not called for a lost worker). */
    private readonly forgetInWorker: (c: Controller) => void,
  ) {
    this.sema = new Sema(size);
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

  /** Checks out a controller: a permit first (bounded by `deadline`), then an idle one or a new one (started by its first call). */
  async acquire(deadline: number, signal: AbortSignal | undefined, acquireTimeoutMs: number): Promise<Controller> {
    await this.permit(deadline, signal, acquireTimeoutMs);
    try {
      const reused = this.takeIdle();
      if (reused) this.counters.reused++;
      const c = reused ?? this.create();
      this.inUse++;
      c.claimed = true;
      c.worker.claims++;
      return c;
    } catch (e) {
      this.sema.release();
      throw e;
    }
  }

  /**
   * Checks out a controller on `worker`, for a call made with `run`, which runs inside its
   * caller in the caller's worker. `held`: permits of this pool the caller's own chain
   * holds; then a permit is taken only if one is free now, never waited for (the chain
   * would be waiting for itself).
   */
  async acquireOn(worker: WorkerHost, held: number, deadline: number, signal: AbortSignal | undefined, acquireTimeoutMs: number): Promise<Controller> {
    if (held === 0) await this.permit(deadline, signal, acquireTimeoutMs);
    else if (this.sema.tryAcquire() === undefined) {
      throw new PlughostError('POOL_EXHAUSTED', `no controller of ${this.label} is free and this call's own chain holds ${held} of its ${this.size}: a call made with run never waits for a controller its own chain holds (raise maxPoolSize, or recurse less deeply)`);
    }
    try {
      let c: Controller | undefined;
      for (let i = this.idle.length - 1; i >= 0; i--) {
        if (this.idle[i]!.worker !== worker) continue;
        c = this.idle.splice(i, 1)[0]!;
        this.counters.reused++;
        break;
      }
      if (!c) {
        // the permit in hand means one live controller is idle when the pool is full: make it room here
        if (this.live.size >= this.size) {
          const victim = this.idle.shift();
          if (victim) this.forget(victim, 'evicted');
        }
        this.host.reserveController(this.label);
        c = new Controller(this.host.nextControllerId(), worker);
        this.live.add(c);
      }
      this.inUse++;
      return c;
    } catch (e) {
      this.sema.release();
      throw e;
    }
  }

  /** Its call was handed to its worker, which counts it from now on. */
  unclaim(c: Controller): void {
    if (!c.claimed) return;
    c.claimed = false;
    c.worker.claims--;
  }

  /** A new controller's first call started it. */
  started(c: Controller): void {
    if (c.started) return;
    c.started = true;
    this.counters.created++;
  }

  /** Returns a healthy controller to the pool (LIFO) and its permit to the semaphore. Once per checkout. */
  release(c: Controller): void {
    if (!this.live.has(c)) return;
    this.unclaim(c);
    this.inUse--;
    this.sema.release();
    c.lastUsed = Date.now();
    if (c.lost) return this.forget(c, 'other');
    if (this.idle.length + this.inUse >= this.size) return this.forget(c, 'other');
    this.idle.push(c);
  }

  /** Discards a checked-out controller whose state is in doubt. */
  drop(c: Controller, reason: DropReason): void {
    if (!this.live.has(c)) return;
    this.unclaim(c);
    this.inUse--;
    this.sema.release();
    this.forget(c, reason);
  }

  private forget(c: Controller, reason: DropReason | 'evicted'): void {
    this.live.delete(c);
    if (reason === 'evicted') this.counters.evicted++;
    else this.counters.dropped[reason]++;
    if (!c.lost && c.started) this.forgetInWorker(c);
    this.host.controllerGone();
  }

  private async permit(deadline: number, signal: AbortSignal | undefined, acquireTimeoutMs: number): Promise<void> {
    if (signal?.aborted) throw new PlughostError('CANCELLED', 'the caller cancelled');
    // the common case, a free permit: no timer, no race, no listener
    if (this.sema.tryAcquire() !== undefined) return;
    const waitMs = Math.max(0, Math.min(deadline - Date.now(), acquireTimeoutMs));
    let settled = false;
    const acquired = this.sema.acquire();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    this.waiting++;
    try {
      await Promise.race([
        acquired,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new PlughostError('POOL_EXHAUSTED', `no controller of ${this.label} became free within ${waitMs} ms (${this.size} in use)`)), waitMs);
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
    const roomForOneMore = this.live.size < this.size;
    const bestStalled = best >= 0 && this.idle[best]!.worker.stalled;
    if (roomForOneMore && this.host.workers.some((w) => w.alive && (w.load === 0 || (bestStalled && !w.stalled)))) return undefined;
    return best < 0 ? undefined : this.idle.splice(best, 1)[0];
  }

  private create(): Controller {
    const worker = cheapest(this.host.workers);
    if (!worker) throw new PlughostError('UNAVAILABLE', 'no runtime worker is alive');
    this.host.reserveController(this.label);
    const c = new Controller(this.host.nextControllerId(), worker);
    this.live.add(c);
    return c;
  }

  /** Its worker is gone, and the instances with it. Checked-out ones are settled by their call. */
  workerLost(worker: WorkerHost): void {
    for (const c of this.live) {
      if (c.worker !== worker) continue;
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
    let oldest: number | undefined;
    for (const c of this.idle) if (oldest === undefined || c.lastUsed < oldest) oldest = c.lastUsed;
    return oldest;
  }

  /** Drops every idle controller (closing). */
  clear(): void {
    for (const c of this.idle.splice(0)) this.forget(c, 'evicted');
  }
}

/** The live worker a new call would wait least on. */
export function cheapest(workers: readonly WorkerHost[]): WorkerHost | undefined {
  let best: WorkerHost | undefined;
  let bestCost = Infinity;
  for (const w of workers) {
    if (!w.alive) continue;
    const cost = w.cost;
    if (cost < bestCost) [best, bestCost] = [w, cost];
  }
  return best;
}
