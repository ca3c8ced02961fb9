// The runtime's worker threads and a warm spare (a new worker takes ~55-100 ms to start:
// a stopped worker's place is taken at once by the spare, and a new spare starts behind
// it). Placement of work is by cost (module-pool.ts); each WorkerHost has its own
// watchdog. close() is bounded: each worker gets a moment to stop, then is terminated.
import { PlughostError, messageOf } from '../errors.js';
import { KV_OPS } from '../kv/txn.js';
import type { WorkerInit } from './protocol.js';
import { WorkerHost, type HostCallHandler } from './worker-host.js';

export interface WorkerPoolOptions {
  count: number;
  hostCallTimeoutMs: number;
  maxHeapMb: number;
  spinUs: number;
  ringBytes: number;
  /** A worker whose heap stands this many bytes above its start after a call is recycled (0: never). */
  recycleHeapBytes: number;
  kv: WorkerInit['kv'];
  handler: HostCallHandler;
  /** A worker was replaced (its controllers are gone, or going: a recycled one finishes the calls it has). */
  onLost(worker: WorkerHost): void;
}

export class WorkerPool {
  readonly workers: WorkerHost[] = [];
  private spare: WorkerHost | undefined;
  private nextId = 1;
  restarts = 0;
  /** Workers replaced because their heap stayed far above where it started. */
  recycled = 0;
  /** Recycled workers finishing the calls they had. */
  readonly retiring = new Set<WorkerHost>();
  /** Calls taken back from behind a long-running call and placed again. */
  callsMoved = 0;
  /** KV operations counted by workers that are gone. */
  private readonly retiredKvOps = new Array<number>(KV_OPS.length).fill(0);
  private closing: Promise<void> | undefined;

  constructor(private readonly options: WorkerPoolOptions) {
    for (let i = 0; i < options.count; i++) this.workers.push(this.start());
    this.spare = this.start();
  }

  /** Resolves once every worker can take calls. */
  async ready(): Promise<void> {
    try {
      await Promise.all([...this.workers, this.spare!].map((w) => w.ready));
    } catch (e) {
      throw new PlughostError('INTERNAL', `runtime workers failed to start: ${messageOf(e)}`, { cause: e });
    }
  }

  private start(): WorkerHost {
    return new WorkerHost({
      id: this.nextId++,
      hostCallTimeoutMs: this.options.hostCallTimeoutMs,
      maxHeapMb: this.options.maxHeapMb,
      spinUs: this.options.spinUs,
      ringBytes: this.options.ringBytes,
      kv: this.options.kv,
      handler: this.options.handler,
      onLost: (w) => this.replace(w),
      elsewhere: (w) => this.workers.some((o) => o !== w && o.alive && !o.stalled),
      onMoved: (n) => (this.callsMoved += n),
      recycleHeapBytes: this.options.recycleHeapBytes,
      onHeavy: (w) => this.recycle(w),
    });
  }

  /** The spare takes the place of the worker at `i`; a new spare starts behind it. */
  private swap(i: number): void {
    this.workers[i] = this.spare?.alive ? this.spare : this.start();
    this.spare = this.start();
  }

  /** A lost worker's slot goes to the warm spare at once; a new spare starts behind it. */
  private replace(lost: WorkerHost): void {
    if (this.closing || this.retiring.has(lost)) return;
    lost.kvOpCounts().forEach((n, i) => (this.retiredKvOps[i]! += n));
    if (lost === this.spare) {
      this.spare = this.start();
      return;
    }
    const i = this.workers.indexOf(lost);
    if (i < 0) return;
    this.restarts++;
    this.swap(i);
    this.options.onLost(lost);
  }

  /**
   * A worker whose heap stayed far above where it started: the spare takes its place at
   * once; it finishes the calls it has (new ones go elsewhere) and stops, and its heap with it.
   */
  private recycle(heavy: WorkerHost): void {
    const i = this.workers.indexOf(heavy);
    if (this.closing || i < 0) return;
    this.recycled++;
    this.retiring.add(heavy);
    this.swap(i);
    this.options.onLost(heavy);
    void heavy.retire().then(() => {
      this.retiring.delete(heavy);
      heavy.kvOpCounts().forEach((n, k) => (this.retiredKvOps[k]! += n));
    });
  }

  /** KV operations guests made in workers, by jco name, since the pool started. */
  kvOps(): Record<string, number> {
    const totals = [...this.retiredKvOps];
    for (const w of [...this.workers, ...this.retiring, ...(this.spare ? [this.spare] : [])]) w.kvOpCounts().forEach((n, i) => (totals[i]! += n));
    return Object.fromEntries(KV_OPS.map((op, i) => [op, totals[i]!]));
  }

  get alive(): number {
    return this.workers.filter((w) => w.alive).length;
  }

  /** Stops every worker (each is terminated if it does not stop by itself within a moment). */
  close(): Promise<void> {
    this.closing ??= Promise.allSettled([...this.workers, ...this.retiring, ...(this.spare ? [this.spare] : [])].map((w) => w.close())).then(() => undefined);
    return this.closing;
  }
}
