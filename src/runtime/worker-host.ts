// The main-thread handle of one runtime worker. It owns the Worker and the bridge port,
// pipelines requests (everything asked in one event-loop iteration goes in one message,
// and while the worker has more than one request left the next batch waits for a reply:
// on these VMs a postMessage costs more than a small call), times each request from
// when it reaches the head of the worker's queue (so a timeout kills only the call that
// caused it, and the requests behind it can be retried elsewhere), and answers the
// worker's synchronous host calls.
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { PlughostError } from '../errors.js';
import { compactDeep } from './compact.js';
import type { BridgeReply, BridgeRequest, FromWorker, ToWorker, WorkerInit } from './protocol.js';

type Request = Extract<ToWorker, { seq: number }>;
type RequestBody = Request extends infer R ? (R extends { seq: number } ? Omit<R, 'seq'> : never) : never;
export type Reply = Extract<FromWorker, { seq: number }>;

export interface HostCallHandler {
  hostCall(callId: number, op: string, args: unknown[]): Promise<{ ok: unknown } | { err: string }> | { ok: unknown } | { err: string };
  log(callId: number, level: string, message: string): void;
}

export interface WorkerHostOptions {
  id: number;
  hostCallTimeoutMs: number;
  /** Heap cap of the worker: a guest that makes jco copy gigabytes kills only its worker. */
  maxHeapMb: number;
  handler: HostCallHandler;
  /** Called once when the worker is gone for any reason other than `close()`. */
  onLost(host: WorkerHost, reason: string): void;
}

interface Pending {
  seq: number;
  body: RequestBody;
  timeoutMs: number;
  resolve(r: Reply): void;
  reject(e: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
  timer?: NodeJS.Timeout;
}

/** Rejection of requests that never started because their worker was lost: safe to retry elsewhere. */
export class WorkerLostError extends PlughostError {
  constructor(message: string) {
    super('UNAVAILABLE', message);
  }
}

/** A request running longer than this is taken for a long one: new work goes elsewhere. */
const STALLED_AFTER_MS = 10;
/** Larger than any queue, so a stalled worker is chosen only when every worker is stalled. */
const STALLED_PENALTY = 1_000_000;

// Plain JavaScript (type-checked through JSDoc): Node 20 cannot run loader hooks such as
// tsx inside workers, and a worker that needs no loader starts faster.
const ENTRY = new URL('./worker/entry.js', import.meta.url);

export class WorkerHost {
  readonly id: number;
  readonly ready: Promise<void>;
  /** Modules whose artifacts this worker has been sent. */
  readonly loaded = new Set<number>();
  private readonly worker: Worker;
  private readonly bridge: MessagePort;
  private readonly flag: Int32Array;
  /** Asked but not yet posted (posted together at the end of the turn, or once ready). */
  private outbox: (Pending | Exclude<ToWorker, { seq: number }>)[] = [];
  private flushScheduled = false;
  /** Posted, in the worker's order: the head is running, the rest wait behind it. */
  private readonly sent: Pending[] = [];
  private seq = 0;
  /** performance.now() when the running request started, 0 when none runs. */
  private headStartedAt = 0;
  private state: 'starting' | 'ready' | 'dead' = 'starting';
  private exited: Promise<void>;

  constructor(private readonly options: WorkerHostOptions) {
    this.id = options.id;
    const channel = new MessageChannel();
    const flagBuffer = new SharedArrayBuffer(4);
    this.flag = new Int32Array(flagBuffer);
    this.bridge = channel.port1;
    const init: WorkerInit = { bridgePort: channel.port2, bridgeFlag: flagBuffer, hostCallTimeoutMs: options.hostCallTimeoutMs };
    this.worker = new Worker(ENTRY, {
      workerData: init,
      execArgv: [],
      transferList: [channel.port2],
      resourceLimits: { maxOldGenerationSizeMb: options.maxHeapMb, maxYoungGenerationSizeMb: 32 },
      stdout: false,
      stderr: false,
    });
    this.bridge.on('message', (m: BridgeRequest) => this.onBridge(m));
    let lostReason = 'worker exited';
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.once('message', (m: FromWorker) => (m.t === 'ready' ? resolve() : reject(new Error('worker spoke before ready'))));
      this.worker.once('error', reject);
      this.worker.once('exit', () => reject(new PlughostError('INTERNAL', 'worker exited while starting')));
    }).then(() => {
      if (this.state === 'starting') this.state = 'ready';
      this.worker.on('message', (m: FromWorker) => this.onReply(m));
    });
    this.ready.catch(() => {});
    this.worker.on('error', (e: Error & { code?: string }) => {
      lostReason = e.code === 'ERR_WORKER_OUT_OF_MEMORY' ? 'memory' : `worker crashed: ${e.message}`;
    });
    this.exited = new Promise((resolve) =>
      this.worker.once('exit', () => {
        this.lose(lostReason);
        resolve();
      }),
    );
  }

  get alive(): boolean {
    return this.state !== 'dead';
  }

  /** Requests waiting or running on this worker. */
  get load(): number {
    let n = this.sent.length;
    for (const m of this.outbox) if ('resolve' in m) n++;
    return n;
  }

  /**
   * What a new request would wait for here, for choosing a worker: the requests ahead of
   * it, plus a heavy penalty once the running one has gone on for STALLED_AFTER_MS. A call
   * queued behind a guest that spins waits for its whole time limit (and then is retried
   * elsewhere), so any worker with a queue of quick calls is the better place.
   */
  get cost(): number {
    return this.load + (this.stalled ? STALLED_PENALTY : 0);
  }

  /** The running request has gone on for more than STALLED_AFTER_MS. */
  get stalled(): boolean {
    return this.headStartedAt > 0 && performance.now() - this.headStartedAt > STALLED_AFTER_MS;
  }

  /** Fire-and-forget messages (load, unload, drop); the worker handles them in order with the requests. */
  send(message: Exclude<ToWorker, { seq: number }>): void {
    if (this.state === 'dead') return;
    this.outbox.push(message);
    this.scheduleFlush();
  }

  /**
   * Runs one request. `timeoutMs` counts from when it reaches the head of the worker's
   * queue; past it the worker is terminated and the request fails with TIMEOUT. Aborting
   * the signal withdraws a request not yet posted.
   */
  request(body: RequestBody, timeoutMs: number, signal?: AbortSignal): Promise<Reply> {
    if (this.state === 'dead') return Promise.reject(new WorkerLostError(`worker ${this.id} is gone`));
    return new Promise<Reply>((resolve, reject) => {
      const p: Pending = { seq: ++this.seq, body, timeoutMs, resolve, reject, signal };
      if (signal) {
        if (signal.aborted) return reject(new PlughostError('CANCELLED', 'cancelled before it started'));
        p.onAbort = () => {
          const i = this.outbox.indexOf(p);
          if (i >= 0) {
            this.outbox.splice(i, 1);
            reject(new PlughostError('CANCELLED', 'cancelled before it started'));
          }
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.outbox.push(p);
      this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    if (this.state === 'starting') this.ready.then(() => this.flush(), () => {});
    else setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    // while the worker has more than one request left, let the outbox fill: the next reply
    // flushes it, and the worker never runs dry (bigger batches, fewer cross-thread wakeups)
    if (this.state !== 'ready' || this.outbox.length === 0 || this.sent.length > 1) return;
    const batch = this.outbox;
    this.outbox = [];
    const wasIdle = this.sent.length === 0;
    const items: ToWorker[] = batch.map((m) => {
      if (!('resolve' in m)) return m;
      if (m.onAbort) m.signal!.removeEventListener('abort', m.onAbort);
      this.sent.push(m);
      return { ...m.body, seq: m.seq } as ToWorker;
    });
    this.worker.postMessage(items.length === 1 ? items[0] : { t: 'batch', items });
    if (wasIdle) this.startHead();
  }

  private startHead(): void {
    const head = this.sent[0];
    this.headStartedAt = head ? performance.now() : 0;
    if (head) head.timer = setTimeout(() => this.timeout(head), Math.max(1, head.timeoutMs));
  }

  private onReply(m: FromWorker): void {
    if (m.t === 'ready') return;
    const p = this.sent[0];
    if (!p || p.seq !== m.seq) return;
    clearTimeout(p.timer);
    this.sent.shift();
    p.resolve(m);
    this.startHead();
    if (this.outbox.length > 0) this.scheduleFlush();
  }

  private timeout(p: Pending): void {
    if (this.sent[0] !== p) return;
    this.sent.shift();
    p.reject(new PlughostError('TIMEOUT', `the call ran past its time limit of ${p.timeoutMs} ms and was stopped`));
    this.lose('timeout', true);
    void this.worker.terminate();
  }

  /** Marks the worker dead once: fails what is queued (retryable) and what is running. */
  private lose(reason: string, headSettled = false): void {
    if (this.state === 'dead') return;
    const wasClosing = this.closing;
    this.state = 'dead';
    this.bridge.close();
    // the head was running when the worker died, unless its timeout already answered for it
    const running = headSettled ? undefined : this.sent.shift();
    if (running) {
      clearTimeout(running.timer);
      running.reject(
        reason === 'memory'
          ? new PlughostError('MEMORY_LIMIT', 'the worker ran out of heap copying guest data; the call was stopped')
          : new PlughostError('TRAP', `the worker running the call died (${reason})`),
      );
    }
    const waiting = [...this.sent.splice(0), ...this.outbox.splice(0).filter((m): m is Pending => 'resolve' in m)];
    for (const p of waiting) {
      if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort);
      p.reject(new WorkerLostError(`worker ${this.id} was lost (${reason}) before the call started`));
    }
    if (!wasClosing) this.options.onLost(this, reason);
  }

  private closing = false;

  /** Stops the worker. Whatever is queued or running fails. */
  async close(): Promise<void> {
    this.closing = true;
    this.lose('closed');
    await this.worker.terminate();
    await this.exited;
  }

  private async onBridge(m: BridgeRequest): Promise<void> {
    if ('log' in m) {
      this.options.handler.log(m.callId, m.level, m.message);
      return;
    }
    let reply: BridgeReply;
    try {
      const r = await this.options.handler.hostCall(m.callId, m.op, m.args);
      reply = 'err' in r ? { seq: m.seq, err: r.err } : { seq: m.seq, ok: compactDeep(r.ok) };
    } catch (e) {
      reply = { seq: m.seq, err: e instanceof PlughostError ? e.message : 'internal error in a host call' };
    }
    if (this.state === 'dead') return;
    this.bridge.postMessage(reply);
    Atomics.store(this.flag, 0, 1);
    Atomics.notify(this.flag, 0);
  }
}
