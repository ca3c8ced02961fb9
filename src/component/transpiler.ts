// jco's work (componentWit, transpileBytes) is synchronous and slow (~250 ms for the first
// component in a process while jco loads its own tools, ~15 ms after): done on the thread
// that serves gRPC it would stall every call. It runs here instead, in one worker thread
// shared by the process, started on first use and restarted on the next use if it dies.
// The worker never keeps the process alive while it is idle.
import { Worker } from 'node:worker_threads';
import { PlughostError, messageOf } from '../errors.js';
import { workerUrl } from '../util/paths.js';
import { captureOutput } from '../util/worker-output.js';

/** What the transpiler worker can do: `wit` is componentWit, `transpile` is transpileBytes. */
export type TranspileOp = 'wit' | 'transpile';

/** Main thread -> worker. `bytes` is a copy whose buffer is transferred, never shared. */
export interface TranspileRequest {
  id: number;
  op: TranspileOp;
  bytes: Uint8Array;
}

/** Worker -> main thread. Files' buffers are transferred. `ok: false` is jco refusing the bytes. */
export type TranspileReply =
  | { id: number; ok: true; op: 'wit'; wit: string }
  | { id: number; ok: true; op: 'transpile'; files: Record<string, Uint8Array>; exports: [string, string][] }
  | { id: number; ok: false; message: string; stack?: string };

/** The worker's `workerData`. */
export interface TranspilerInit {
  /** Int32Array[1] over it: jco operations finished by transpiler workers (each adds 1). */
  jobs: SharedArrayBuffer;
}

export interface TranspileOutput {
  files: Record<string, Uint8Array>;
  exports: [string, string][];
}

export interface TranspilerStats {
  /** Workers started so far (a crash or close followed by more work starts another). */
  workersStarted: number;
  /** jco operations (componentWit or transpileBytes, refused or not) finished in a transpiler worker. */
  jobsDone: number;
  /** Requests sent and not yet answered. */
  pending: number;
  /** Whether a worker is running now. */
  running: boolean;
}

/** jco refused the bytes (the worker is fine): the message is jco's. */
export class JcoError extends Error {
  override name = 'JcoError';
  constructor(message: string, stack?: string) {
    super(message);
    if (stack) this.stack = stack;
  }
}

interface Pending {
  resolve(reply: TranspileReply & { ok: true }): void;
  reject(e: Error): void;
}

/** The worker's module: compiled JavaScript, also under tsx (see workerUrl). */
const entry = () => workerUrl('./transpile-worker.js', import.meta.url);

export interface TranspilerOptions {
  /** The worker script; tests substitute one. */
  entry?: URL;
}

export class Transpiler {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private workersStarted = 0;
  private readonly jobs = new Int32Array(new SharedArrayBuffer(4));
  private readonly entry: URL | undefined;

  constructor(options: TranspilerOptions = {}) {
    this.entry = options.entry;
  }

  /** The component's WIT, as jco's `componentWit` prints it. Rejects with JcoError if jco refuses the bytes. */
  async wit(bytes: Uint8Array): Promise<string> {
    const reply = await this.request('wit', bytes);
    if (reply.op !== 'wit') throw new PlughostError('INTERNAL', `the transpiler worker answered a wit request with ${reply.op}`);
    return reply.wit;
  }

  /** jco's `transpileBytes` with plughost's options. Rejects with JcoError if jco refuses the bytes. */
  async transpile(bytes: Uint8Array): Promise<TranspileOutput> {
    const reply = await this.request('transpile', bytes);
    if (reply.op !== 'transpile') throw new PlughostError('INTERNAL', `the transpiler worker answered a transpile request with ${reply.op}`);
    return { files: reply.files, exports: reply.exports };
  }

  stats(): TranspilerStats {
    return { workersStarted: this.workersStarted, jobsDone: Atomics.load(this.jobs, 0), pending: this.pending.size, running: this.worker !== undefined };
  }

  /**
   * Stops the worker; requests in flight fail with UNAVAILABLE. The Transpiler stays
   * usable: the next request starts a new worker.
   */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.lose(worker, new PlughostError('UNAVAILABLE', 'the transpiler is closing'));
    await worker.terminate();
  }

  private request(op: TranspileOp, bytes: Uint8Array): Promise<TranspileReply & { ok: true }> {
    const worker = (this.worker ??= this.start());
    const id = this.nextId++;
    // a copy the worker owns: the caller keeps its bytes, whose buffer may be Buffer's shared
    // pool (and a Buffer's slice() is a view, not a copy: new Uint8Array copies)
    const copy = new Uint8Array(bytes);
    const message: TranspileRequest = { id, op, bytes: copy };
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) worker.ref(); // busy: an awaited compile must not be cut short by an exit
      this.pending.set(id, { resolve, reject });
      try {
        worker.postMessage(message, [copy.buffer]);
      } catch (e) {
        this.settle(id);
        reject(new PlughostError('INTERNAL', `cannot send a ${op} request to the transpiler worker: ${messageOf(e)}`, { cause: e }));
      }
    });
  }

  private start(): Worker {
    const init: TranspilerInit = { jobs: this.jobs.buffer as SharedArrayBuffer };
    const worker = new Worker(this.entry ?? entry(), { workerData: init, execArgv: [], stdout: true, stderr: true });
    captureOutput(worker, 'transpiler');
    this.workersStarted++;
    worker.unref();
    worker.on('message', (reply: TranspileReply) => {
      const p = this.settle(reply.id);
      if (!p) return;
      if (reply.ok) p.resolve(reply);
      else p.reject(new JcoError(reply.message, reply.stack));
    });
    worker.on('error', (e) => this.lose(worker, new PlughostError('INTERNAL', `the transpiler worker crashed: ${messageOf(e)}`, { cause: e })));
    worker.on('exit', (code) => this.lose(worker, new PlughostError('INTERNAL', `the transpiler worker exited (code ${code})`)));
    return worker;
  }

  /** Forgets a request; once none is left the worker no longer keeps the process alive. */
  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    this.pending.delete(id);
    if (p && this.pending.size === 0) this.worker?.unref();
    return p;
  }

  /** `worker` is gone (or going): everything sent to it fails, and the next request starts another. */
  private lose(worker: Worker, error: PlughostError): void {
    if (this.worker !== worker) return; // an old worker's late exit
    this.worker = undefined;
    worker.unref();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(error);
  }
}

let shared: Transpiler | undefined;

/** The process's Transpiler (its worker starts on first use). */
export function transpiler(): Transpiler {
  return (shared ??= new Transpiler());
}

/** Stops the process's transpiler worker, if it runs; a later compile starts a new one. */
export async function closeTranspiler(): Promise<void> {
  await shared?.close();
}

export function transpilerStats(): TranspilerStats {
  return transpiler().stats();
}
