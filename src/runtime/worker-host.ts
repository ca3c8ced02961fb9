// The main-thread handle of one runtime worker: its Worker, its two rings, its control
// and bridge ports, the calls it has been handed (in order: the worker runs them one at a
// time), and one watchdog. A call is written into the request ring in one go; replies are
// read from the reply ring in batches, whenever the main thread is woken for one. The
// watchdog is one timer per worker, armed for the earliest moment a call could overrun:
// past its time limit (counted from when the worker started it) the worker is
// terminated; the calls queued behind it never started and are safe to run elsewhere.
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { PlughostError } from '../errors.js';
import { compactDeep } from './compact.js';
import type { BridgeReply, BridgeRequest, ControlMessage, WorkerInit } from './protocol.js';
import { Ring } from './shared/ring.js';
import { KV_OPS } from '../kv/txn.js';
import { REQ, STATUS, STATUS_LAYOUT, readReply, writeCall, writeSmall, type CallRecord, type ReplyRecord, type RowResult } from './shared/wire.js';
import { workerUrl } from '../util/paths.js';
import { captureOutput } from '../util/worker-output.js';

export interface HostCallHandler {
  hostCall(callId: number, op: string, args: unknown[]): Promise<{ ok: unknown } | { err: string }> | { ok: unknown } | { err: string };
  log(callId: number, level: string, message: string): void;
}

export interface WorkerHostOptions {
  id: number;
  hostCallTimeoutMs: number;
  /** Heap cap of the worker: a guest that makes jco copy gigabytes kills only its worker. */
  maxHeapMb: number;
  /** Bytes of each ring (a power of two). */
  ringBytes: number;
  spinUs: number;
  kv: WorkerInit['kv'];
  handler: HostCallHandler;
  /** Called once when the worker is gone for any reason other than `close()`. */
  onLost(host: WorkerHost, reason: string): void;
  /** Some other live worker is not stalled: calls waiting behind this one's long call may go there. */
  elsewhere(host: WorkerHost): boolean;
  /** `n` calls waiting behind a long call were taken back to be placed again. */
  onMoved(n: number): void;
  /** After a call, the worker's heap in use stands this many bytes above where it started: recycle it (0: never). */
  recycleHeapBytes: number;
  /** Called once when the worker's heap stands over recycleHeapBytes above its start after a call. */
  onHeavy(host: WorkerHost, grownBytes: number): void;
}

/** Rejection of calls that never started because their worker was lost: safe to retry elsewhere. */
export class WorkerLostError extends PlughostError {
  constructor(message: string) {
    super('UNAVAILABLE', message);
  }
}

/**
 * Rejection of a call taken back before it reached the worker, because the worker's
 * running call has gone on long: its controller is unharmed; the call is placed again.
 */
export class CallMovedError extends WorkerLostError {}

export type CallBody = Omit<CallRecord, 'seq'>;

/**
 * What a call with rows had done when it was stopped (timeout, its worker lost while it
 * ran): the results of the rows it had sent back, and the row it was running (-1: it was
 * starting its controller). Set on the error its promise rejects with.
 */
export interface RowsProgress {
  rowsDone: RowResult[];
  rowRunning: number;
}

/** The progress of a call with rows that was stopped, if the error carries one. */
export function rowsProgressOf(e: unknown): RowsProgress | undefined {
  return e instanceof Error && 'rowsDone' in e ? (e as Error & RowsProgress) : undefined;
}

/** The limit of a call made with run, inside the call `seq`. */
export interface NestedLimit {
  seq: number;
  until: number;
  limitText: string;
}

interface Pending {
  seq: number;
  /** Taken back before the worker started it (its WITHDRAWN reply is still to come). */
  moved?: boolean;
  body: CallBody;
  timeLimitMs: number;
  /** What the caller calls its limit (the module's, when part of the call's budget was spent before). */
  limitText: string;
  /** A call with rows: the results its worker sent back so far. */
  rowsDone?: RowResult[];
  resolve(r: ReplyRecord): void;
  reject(e: unknown): void;
}

type Outgoing = { t: 'call'; p: Pending } | { t: 'control'; m: ControlMessage } | { t: 'drop'; id: number };

/** A request running longer than this is taken for a long one: new work goes elsewhere. */
const STALLED_AFTER_MS = 10;
/** Larger than any queue, so a stalled worker is chosen only when every worker is stalled. */
const STALLED_PENALTY = 1_000_000;
/**
 * How many worker spins long the reply pump keeps looking (on event-loop turns, which serve
 * I/O in between) before it sleeps: a reply from a worker that was asleep comes 50-100 µs
 * after the call, and a pump asleep by then must itself be woken, which slows every later
 * call of a sequential caller down to the speed of two wake-ups.
 */
const PUMP_POLL_SPINS = 4;
/** Longest the reply pump sleeps before it looks at the ring again, notified or not. */
const PUMP_WAIT_MS = 50;
/** How long close() lets the worker stop by itself before terminating it. */
const STOP_GRACE_MS = 500;

/**
 * The worker's module: compiled JavaScript, also when this module runs under tsx (see
 * workerUrl); a worker that needs no loader starts faster.
 */
const entry = () => workerUrl('./worker/entry.js', import.meta.url);

const now = () => performance.timeOrigin + performance.now();

/** A FIFO whose shift is O(1). */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(v: T): void {
    this.items.push(v);
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  at(i: number): T | undefined {
    return this.items[this.head + i];
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const v = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return v;
  }
  drain(): T[] {
    const out = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return out;
  }
}

export class WorkerHost {
  readonly id: number;
  readonly ready: Promise<void>;
  /** Modules whose artifacts this worker has been sent. */
  readonly loaded = new Set<number>();
  private readonly worker: Worker;
  private readonly requests: Ring;
  private readonly replies: Ring;
  private readonly control: MessagePort;
  private readonly bridge: MessagePort;
  private readonly bridgeFlag: Int32Array;
  /** The worker's status block (wire.ts STATUS_LAYOUT). */
  private readonly status: Int32Array;
  private readonly runningSince: Float64Array;
  /** Calls in `sent` taken back (moved), their WITHDRAWN replies not yet read. */
  private moved = 0;
  private readonly kvOps: Float64Array;
  /** The worker's heap in use (WorkerInit.heap): [0] when it started, [1] after its last call. */
  private readonly heap: Float64Array;
  private heavy = false;
  /** Recycled: takes no new calls, and stops once those it has are done. */
  private retiring = false;
  /** In the ring (or announced in it), in the worker's order. */
  private readonly sent = new Fifo<Pending>();
  /** Not yet in the ring: it was full, or something ahead of it is waiting. */
  private readonly outbox = new Fifo<Outgoing>();
  private seq = 0;
  private pumping = false;
  private flushing = false;
  private watchdog: NodeJS.Timeout | undefined;
  /** Calls made with `run` whose ends are not served yet, innermost last, with the seq of the call that made them: each has a limit of its own. */
  private nested: NestedLimit[] = [];
  private moveTimer: NodeJS.Timeout | undefined;
  private wakeScheduled = false;
  private watchdogAt = Infinity;
  private state: 'starting' | 'ready' | 'dead' = 'starting';
  private closing = false;
  private readonly exited: Promise<void>;

  constructor(private readonly options: WorkerHostOptions) {
    this.id = options.id;
    const controlChannel = new MessageChannel();
    const bridgeChannel = new MessageChannel();
    const status = new SharedArrayBuffer(STATUS_LAYOUT.bytes);
    const kvOps = new SharedArrayBuffer(8 * KV_OPS.length);
    const bridgeFlag = new SharedArrayBuffer(4);
    const heap = new SharedArrayBuffer(16);
    const init: WorkerInit = {
      requests: Ring.allocate(options.ringBytes),
      replies: Ring.allocate(options.ringBytes),
      status,
      controlPort: controlChannel.port2,
      bridgePort: bridgeChannel.port2,
      bridgeFlag,
      hostCallTimeoutMs: options.hostCallTimeoutMs,
      spinUs: options.spinUs,
      kv: options.kv,
      kvOps,
      heap,
    };
    this.requests = new Ring(init.requests);
    this.replies = new Ring(init.replies);
    this.control = controlChannel.port1;
    this.bridge = bridgeChannel.port1;
    this.bridgeFlag = new Int32Array(bridgeFlag);
    this.status = new Int32Array(status);
    this.runningSince = new Float64Array(status);
    this.kvOps = new Float64Array(kvOps);
    this.heap = new Float64Array(heap);
    this.worker = new Worker(entry(), {
      workerData: init,
      execArgv: [],
      transferList: [controlChannel.port2, bridgeChannel.port2],
      resourceLimits: { maxOldGenerationSizeMb: options.maxHeapMb, maxYoungGenerationSizeMb: 32 },
      // what the worker prints goes to the service's JSON log (util/worker-output.ts), never raw
      stdout: true,
      stderr: true,
    });
    captureOutput(this.worker, `runtime-${this.id}`);
    this.bridge.on('message', (m: BridgeRequest) => void this.onBridge(m));
    let lostReason = 'worker exited';
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.once('message', (m: { t?: string }) => (m.t === 'ready' ? resolve() : reject(new Error('worker spoke before ready'))));
      this.worker.once('error', reject);
      this.worker.once('exit', () => reject(new PlughostError('INTERNAL', 'worker exited while starting')));
    }).then(() => {
      if (this.state === 'starting') this.state = 'ready';
      this.flush();
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

  /** KV operations its guests made, in the order of KV_OPS (counted by the worker). */
  kvOpCounts(): number[] {
    return [...this.kvOps];
  }

  /**
   * Controllers on this worker checked out for a call not yet handed over: counted as load
   * so that calls placed in the same instant do not all pick the same idle-looking worker.
   */
  claims = 0;

  /** Calls waiting or running on this worker, or about to be. */
  get load(): number {
    let n = this.sent.length - this.moved + this.claims;
    for (let i = 0; i < this.outbox.length; i++) if (this.outbox.at(i)!.t === 'call') n++;
    return n;
  }

  /**
   * What a new call would wait for here, for choosing a worker: the calls ahead of it,
   * plus a heavy penalty once the running one has gone on for STALLED_AFTER_MS. A call
   * queued behind a guest that spins waits for that guest's whole time limit.
   */
  get cost(): number {
    return this.load + (this.stalled ? STALLED_PENALTY : 0);
  }

  /** The row the running call with rows is in (-1: no such call, or its first row has not started). */
  get runningRow(): number {
    return Atomics.load(this.status, STATUS_LAYOUT.running) === 0 ? -1 : Atomics.load(this.status, STATUS_LAYOUT.row);
  }

  /** When the running call (a call with rows: its current row) started, epoch ms; NaN when none runs. */
  get runningSinceMs(): number {
    return Atomics.load(this.status, STATUS_LAYOUT.running) === 0 ? NaN : this.runningSince[STATUS_LAYOUT.since]!;
  }

  /** The running call has gone on for more than STALLED_AFTER_MS. */
  get stalled(): boolean {
    return Atomics.load(this.status, STATUS_LAYOUT.running) !== 0 && now() - this.runningSince[STATUS_LAYOUT.since]! > STALLED_AFTER_MS;
  }

  /**
   * Runs one call. `timeLimitMs` counts from when the worker starts it (a call with rows:
   * from when each row starts); past it the worker is terminated and the call fails with
   * TIMEOUT. Cancelling `signal` stops a call with rows before its next row.
   */
  call(body: CallBody, timeLimitMs: number, limitText = `its time limit of ${timeLimitMs} ms`, signal?: AbortSignal): Promise<ReplyRecord> {
    if (this.state === 'dead') return Promise.reject(new WorkerLostError(`worker ${this.id} is gone`));
    if (this.retiring) return Promise.reject(new WorkerLostError(`worker ${this.id} is being recycled`));
    return new Promise<ReplyRecord>((resolve, reject) => {
      const p: Pending = { seq: ++this.seq, body, timeLimitMs, limitText, resolve, reject };
      if (body.rows) {
        p.rowsDone = [];
        // rows not yet started when the caller gives up are not started (the worker looks before each)
        if (signal) {
          const cancel = () => Atomics.store(this.status, STATUS_LAYOUT.cancelled, p.seq);
          signal.addEventListener('abort', cancel, { once: true });
          const forget = () => signal.removeEventListener('abort', cancel);
          p.resolve = (r) => (forget(), resolve(r));
          p.reject = (e) => (forget(), reject(e));
        }
      }
      this.enqueue({ t: 'call', p });
      this.arm(now() + timeLimitMs);
    });
  }

  /**
   * The running call entered a call of another module with `run` (which runs in this
   * worker, inside it): until `leaveNested`, the watchdog also stops the worker at `until`.
   */
  enterNested(until: number, limitText: string): NestedLimit {
    const entry = { seq: Atomics.load(this.status, STATUS_LAYOUT.running), until, limitText };
    this.nested.push(entry);
    this.arm(until);
    return entry;
  }

  leaveNested(entry: NestedLimit): void {
    const i = this.nested.lastIndexOf(entry);
    if (i >= 0) this.nested.splice(i, 1);
  }

  /** Sends a module's artifacts (once per worker; ordered with the calls). */
  loadModule(m: Extract<ControlMessage, { t: 'load' }>): void {
    if (this.loaded.has(m.moduleId)) return;
    this.loaded.add(m.moduleId);
    this.enqueue({ t: 'control', m });
  }

  unloadModule(moduleId: number): void {
    if (this.loaded.delete(moduleId)) this.enqueue({ t: 'control', m: { t: 'unload', moduleId } });
  }

  /** Forgets a controller in the worker. */
  drop(controllerId: number): void {
    this.enqueue({ t: 'drop', id: controllerId });
  }

  private enqueue(o: Outgoing): void {
    if (this.state === 'dead') {
      if (o.t === 'call') o.p.reject(new WorkerLostError(`worker ${this.id} is gone`));
      return;
    }
    if (this.state === 'starting' || this.outbox.length > 0 || !this.write(o)) {
      this.outbox.push(o);
      if (o.t === 'call') this.armMove();
    }
  }

  /** Puts one outgoing item into the request ring; false when it is full now. */
  private write(o: Outgoing): boolean {
    const ring = this.requests;
    if (o.t === 'drop') {
      if (!writeSmall(ring, REQ.DROP, o.id)) return false;
    } else if (o.t === 'control') {
      if (!writeSmall(ring, REQ.CONTROL, 0)) return false;
      this.control.postMessage(o.m);
    } else {
      const call: CallRecord = { ...o.p.body, seq: o.p.seq };
      const r = writeCall(ring, call);
      if (r === 'full') return false;
      if (r === 'too-big') {
        if (!writeSmall(ring, REQ.CONTROL, 0)) return false;
        this.control.postMessage({ t: 'call', call } satisfies ControlMessage);
      }
      this.sent.push(o.p);
      // a call that waited in the outbox (its worker starting, its ring full) may have missed
      // the watchdog's last look: no call reaches the worker without one armed for it
      this.arm(now() + o.p.timeLimitMs);
      if (this.sent.length > 1) this.armMove();
      this.pump();
    }
    if (ring.publish()) this.wakeSoon();
    return true;
  }

  /**
   * Wakes the sleeping worker once this event-loop turn has handed over what it has: a
   * wake-up (Atomics.notify) costs this thread 15-25 µs on these VMs, so the calls of one
   * turn share one. A worker that is awake (spinning) needs none.
   */
  private wakeSoon(): void {
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      if (this.state !== 'dead') this.requests.wake();
    });
  }

  private flush(): void {
    // write() starts the reply pump, whose first drain() flushes too: one flush at a time
    if (this.state !== 'ready' || this.flushing) return;
    this.flushing = true;
    try {
      while (this.outbox.length > 0) {
        if (!this.write(this.outbox.peek()!)) return;
        this.outbox.shift();
      }
    } finally {
      this.flushing = false;
    }
  }

  /** Reads replies while calls are outstanding; sleeps (never blocking) between them. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    void (async () => {
      try {
        while (this.state !== 'dead') {
          this.drain();
          if (this.sent.length === 0) break;
          // look again on the next few event-loop turns before sleeping: a worker that has to
          // wake this thread pays ~15 µs for it; the turns still serve everything else
          const until = performance.now() + (PUMP_POLL_SPINS * this.options.spinUs) / 1000;
          while (!this.replies.ready && this.alive && performance.now() < until) await new Promise((r) => setImmediate(r));
          if (this.replies.ready) continue;
          // bounded: a lost notify (seen with waitAsync in workers) costs at most this much
          const wait = this.replies.waitAsync(PUMP_WAIT_MS);
          if (wait) await wait;
        }
      } finally {
        this.pumping = false;
      }
    })();
  }

  /** Settles every reply in the ring now, then refills the request ring. */
  private drain(): void {
    for (let at = this.replies.peek(); at >= 0 && this.state !== 'dead'; at = this.replies.peek()) {
      let m = readReply(this.replies, at);
      this.replies.consume(at);
      if (m.status === STATUS.ON_PORT) {
        const big = receiveMessageOnPort(this.control);
        if (!big) return this.die('protocol: a reply announced on the control port is missing');
        m = big.message as ReplyRecord;
      }
      if (m.status === STATUS.ROWS) {
        const head = this.sent.peek();
        if (head?.seq === m.seq && head.rowsDone && m.rows) for (const r of m.rows) head.rowsDone.push(r);
        continue;
      }
      if (m.status === STATUS.LOG) {
        const head = this.sent.peek();
        // a call made with run logs as itself (its own call id), inside the call that made it
        const line = m.value as { level: string; message: string; callId?: number };
        if (head?.seq === m.seq) this.options.handler.log(line.callId ?? head.body.callId, line.level, line.message);
        continue;
      }
      const p = this.sent.shift();
      if (!p || p.seq !== m.seq) return this.die(`protocol: reply ${m.seq} does not match call ${p?.seq}`);
      // the end of a call made with run is posted, not waited for: settle it before its caller
      if (this.nested.length && this.nested.some((n) => n.seq === m.seq)) {
        this.drainBridge();
        this.nested = this.nested.filter((n) => n.seq !== m.seq);
      }
      if (p.moved) this.moved--;
      else if (m.status === STATUS.WITHDRAWN) p.reject(new CallMovedError(`worker ${this.id} is busy with a long call; the call was placed again`));
      else {
        if (p.rowsDone?.length && m.rows) m.rows = p.rowsDone.concat(m.rows);
        p.resolve(m);
      }
      this.checkHeap();
    }
    if (this.outbox.length > 0) this.flush();
    if (this.retiring) this.stopIfDone();
  }

  /** A retiring worker stops once no call of its own is left. */
  private stopIfDone(): void {
    if (this.closing || this.sent.length > 0) return;
    for (let i = 0; i < this.outbox.length; i++) if (this.outbox.at(i)!.t === 'call') return;
    void this.close();
  }

  /** After a call: a worker whose heap stands far above where it started is recycled (once). */
  private checkHeap(): void {
    const grown = this.heap[1]! - this.heap[0]!;
    if (this.heavy || this.options.recycleHeapBytes <= 0 || grown <= this.options.recycleHeapBytes) return;
    this.heavy = true;
    this.options.onHeavy(this, grown);
  }

  /**
   * Recycles the worker: it takes no new calls (they are placed elsewhere), finishes those it
   * was handed, then stops; its heap goes with it. Resolves once it has exited.
   */
  async retire(): Promise<void> {
    this.retiring = true;
    this.stopIfDone();
    await this.exited;
  }

  /** Looks, once the running call could count as stalled, whether the calls behind it should move. */
  private armMove(): void {
    if (this.moveTimer || this.state === 'dead') return;
    const since = Atomics.load(this.status, STATUS_LAYOUT.running) !== 0 ? this.runningSince[STATUS_LAYOUT.since]! : now();
    this.moveTimer = setTimeout(() => this.moveWaiting(), Math.max(1, Math.ceil(since + STALLED_AFTER_MS - now()) + 1));
    this.moveTimer.unref();
  }

  /**
   * Calls waiting behind a stalled call (in the ring, not yet started, or still in the
   * outbox) are taken back, to be placed on a worker that is free: a call queued behind a
   * guest that spins would wait for that guest's whole time limit.
   */
  private moveWaiting(): void {
    this.moveTimer = undefined;
    if (this.state === 'dead') return;
    this.drain();
    let waiting = this.sent.length - this.moved - 1;
    for (let i = 0; i < this.outbox.length; i++) if (this.outbox.at(i)!.t === 'call') waiting++;
    if (waiting <= 0) return;
    if (!this.stalled || !this.options.elsewhere(this)) return this.armMove();
    let n = 0;
    const moved = () => {
      n++;
      return new CallMovedError(`worker ${this.id} is busy with a long call; the call was placed again`);
    };
    const last = this.sent.at(this.sent.length - 1);
    if (last) {
      // see STATUS_LAYOUT: a call the worker has not begun by now never runs here
      Atomics.store(this.status, STATUS_LAYOUT.withdrawn, last.seq);
      const started = Atomics.load(this.status, STATUS_LAYOUT.started);
      for (let i = 0; i < this.sent.length; i++) {
        const p = this.sent.at(i)!;
        if (p.seq <= started || p.moved) continue;
        p.moved = true;
        this.moved++;
        p.reject(moved());
      }
    }
    const keep = this.outbox.drain().filter((o) => {
      if (o.t !== 'call') return true;
      o.p.reject(moved());
      return false;
    });
    for (const o of keep) this.outbox.push(o);
    this.options.onMoved(n);
    this.flush();
  }

  private arm(at: number): void {
    if (at >= this.watchdogAt || this.state === 'dead') return;
    clearTimeout(this.watchdog);
    this.watchdogAt = at;
    this.watchdog = setTimeout(() => this.check(), Math.max(1, Math.ceil(at - now())));
    this.watchdog.unref();
  }

  /** The watchdog: stops the worker if its running call is past its limit, else re-arms. */
  private check(): void {
    this.watchdog = undefined;
    this.watchdogAt = Infinity;
    if (this.state === 'dead') return;
    this.drain();
    if (this.sent.length === 0) return;
    const seq = Atomics.load(this.status, STATUS_LAYOUT.running);
    const since = this.runningSince[STATUS_LAYOUT.since]!;
    let runningCall: Pending | undefined;
    for (let i = 0; i < this.sent.length; i++) if (this.sent.at(i)!.seq === seq) runningCall = this.sent.at(i);
    if (!runningCall || Atomics.load(this.status, STATUS_LAYOUT.running) !== seq) {
      // nothing of ours runs yet: no call can overrun before the first one's limit from now
      return this.arm(now() + this.sent.peek()!.timeLimitMs);
    }
    const inner = this.nested.findLast((n) => n.seq === seq);
    if (inner && now() >= inner.until) return this.timeout(runningCall, inner.limitText);
    const end = Math.min(since + runningCall.timeLimitMs, inner?.until ?? Infinity);
    if (now() < end) return this.arm(end);
    this.timeout(runningCall);
  }

  private timeout(p: Pending, nestedLimit?: string): void {
    // calls before it finished (their replies were read just now); it is the one running
    while (this.sent.length > 0 && this.sent.peek() !== p) this.sent.shift()!.reject(new WorkerLostError('protocol: a finished call had no reply'));
    this.sent.shift();
    const why = nestedLimit ? `a call it made with run ran past ${nestedLimit}; the call was stopped` : `the call ran past ${p.limitText} and was stopped`;
    p.reject(this.withProgress(p, new PlughostError('TIMEOUT', why)));
    this.lose('timeout', true);
    void this.worker.terminate();
  }

  /** The error of a running call that was stopped, with how far its rows got (see RowsProgress). */
  private withProgress(p: Pending, e: PlughostError): PlughostError {
    if (!p.rowsDone) return e;
    return Object.assign(e, { rowsDone: p.rowsDone, rowRunning: Atomics.load(this.status, STATUS_LAYOUT.row) } satisfies RowsProgress);
  }

  private die(reason: string): void {
    this.lose(reason);
    void this.worker.terminate();
  }

  /** Marks the worker dead once: fails what is queued (retryable) and what is running. */
  private lose(reason: string, headSettled = false): void {
    if (this.state === 'dead') return;
    this.state = 'dead';
    this.nested.length = 0;
    clearTimeout(this.watchdog);
    clearTimeout(this.moveTimer);
    this.bridge.close();
    // wake the reply pump so it sees the worker is gone
    Atomics.notify(this.replies.header, 0);
    const runningSeq = Atomics.load(this.status, STATUS_LAYOUT.running);
    const sent = this.sent.drain();
    this.moved = 0;
    for (const p of sent) {
      if (!headSettled && p.seq === runningSeq) {
        p.reject(
          this.withProgress(
            p,
            reason === 'closed'
              ? new PlughostError('UNAVAILABLE', 'the runtime closed before the call finished; it was stopped')
              : reason === 'memory'
              ? new PlughostError('MEMORY_LIMIT', 'the worker ran out of heap copying guest data; the call was stopped')
              : new PlughostError('TRAP', `the worker running the call died (${reason})`),
          ),
        );
      } else {
        p.reject(new WorkerLostError(`worker ${this.id} was lost (${reason}) before the call started`));
      }
    }
    for (const o of this.outbox.drain()) if (o.t === 'call') o.p.reject(new WorkerLostError(`worker ${this.id} was lost (${reason}) before the call started`));
    if (!this.closing) this.options.onLost(this, reason);
  }

  /** Stops the worker: lets it stop by itself for a moment, then terminates it. Whatever is queued or running fails. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.state === 'ready') {
      this.enqueue({ t: 'control', m: { t: 'stop' } });
      const stopped = await Promise.race([this.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), STOP_GRACE_MS).unref())]);
      if (stopped) return;
    }
    this.lose('closed');
    await this.worker.terminate();
    await this.exited;
  }

  /** Serves the bridge messages already posted, in order, now (before the reply they came ahead of). */
  private drainBridge(): void {
    for (let m = receiveMessageOnPort(this.bridge); m; m = receiveMessageOnPort(this.bridge)) void this.onBridge(m.message as BridgeRequest);
  }

  private async onBridge(m: BridgeRequest): Promise<void> {
    let reply: BridgeReply;
    try {
      const r = await this.options.handler.hostCall(m.callId, m.op, m.args);
      reply = 'err' in r ? { seq: m.seq, err: r.err } : { seq: m.seq, ok: compactDeep(r.ok) };
    } catch (e) {
      reply = { seq: m.seq, err: e instanceof PlughostError ? e.message : 'internal error in a host call' };
    }
    if (this.state === 'dead') return;
    this.bridge.postMessage(reply);
    Atomics.store(this.bridgeFlag, 0, 1);
    Atomics.notify(this.bridgeFlag, 0);
  }
}
