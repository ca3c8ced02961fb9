// One invocation, end to end, owned by one object: plan its KV access, check out a
// controller, hand everything to the worker in one go (a new controller's instantiation
// and init, then the export) under one time budget, then settle: commit, release or drop,
// exactly once each. A writer takes its scope's lock on this thread before the hand-off
// (so no worker is parked waiting for a scope) and holds it until its reply is in: the
// commit goes on behind it, and the next writer reads through it (KvStore.overlayOf).
// A call whose worker was lost before it started ran nothing of itself and is run again,
// until its deadline; so is one taken back from a worker whose running call went on long
// (CallMovedError).
import { PlughostError, isPlughostError, messageOf } from '../errors.js';
import { KvOpError } from '../kv/kv-error.js';
import { type KvAccess, type KvScope, type KvStore, type KvTransaction } from '../kv/types.js';
import type { InvocationContext } from './context.js';
import type { Controller } from './controller.js';
import type { Runtime } from './runtime.js';
import { EXPORTS, FLAG, RFLAG, STATUS, type ReplyRecord } from './shared/wire.js';
import { CallMovedError, WorkerLostError, rowsProgressOf, type WorkerHost } from './worker-host.js';
import { CallTree } from './nested.js';
import { scopeId } from '../kv/keys.js';

/** What a Runtime needs from whoever owns the workers and the store (RuntimeManager). */
export interface CallServices {
  readonly store: KvStore | undefined;
  /** Workers read the store themselves (else KV goes over the host-call bridge). */
  readonly kvInWorkers: boolean;
  readonly acquireTimeoutMs: number;
  /** Worker threads there are (a quarantined module gets one fewer). */
  readonly workerCount: number;
  /** How long a module stays quarantined after a call of it timed out (0: never). */
  readonly quarantineMs: number;
  /** Longest one invoke-batch entry may run (its rows times the per-call limit, at most this). */
  readonly batchEntryMaxMs: number;
  /** Registers a call whose host calls cross the bridge; returns its id. */
  beginBridgedCall(state: BridgedCall): number;
  endBridgedCall(callId: number): void;
  /** A call's KV writes are durable, `seconds` after it asked to commit (for metrics). */
  committed(seconds: number): void;
}

/** What the host-call bridge needs to serve one call's imports on the main thread. */
export interface BridgedCall {
  ctx: InvocationContext;
  runtime: Runtime;
  access: KvAccess;
  scope: KvScope;
  lockHeld: boolean;
  txn?: KvTransaction;
  /** The row of a call with rows the worker is running now (undefined: not a call with rows, or none yet). */
  row(): number | undefined;
  /** Epoch ms at which the call (a call with rows: its current row) runs out of time. */
  endsAt(): number;
  /** The worker running it (a call made with run runs in its caller's). */
  worker: WorkerHost;
  /** 0 for a top-level call; a call made with run is one deeper than its caller. */
  depth: number;
  /** The top-level call and those made under it with run (absent when the module cannot call run). */
  tree?: CallTree;
  /** The call that made this one with run. */
  parent?: BridgedCall;
  /** Aborted when the call ends (stops a sql it is waiting for). */
  ended?: AbortController;
  /** A KV operation of it got no answer in time (it may still land): the call must not commit. */
  kvFailure?: PlughostError;
}

export type Job =
  | { fn: 'invoke'; name: string | undefined; args: Uint8Array }
  | RowsJob
  | { fn: 'describe' }
  | { fn: 'functionWriteable'; name: string | undefined };

/**
 * Rows of one function in one hand-off: `invoke` once per row, each row its own call (KV
 * transaction, time limit, outcome), or the guest's `invoke-batch` once for all (`entry`:
 * one transaction, the time limit times the rows).
 */
export interface RowsJob {
  fn: 'invokeRows';
  name: string | undefined;
  rows: readonly Uint8Array[];
  entry: boolean;
  /** Response bytes these rows' results may take together (what the batch's earlier rows left of the cap). */
  resultBudget: number | undefined;
  /**
   * Each row's index in its whole batch (a hand-off may be a split part, or the rows after a
   * failed one), so a host call names the batch's row; absent: the hand-off is the batch.
   */
  batchRows?: readonly number[];
}

/** One row's result: what the guest returned, or why the row did not complete. */
export type RowOutcome = { ok: true; value: Uint8Array } | { ok: false; guestError: string } | { ok: false; failure: PlughostError };

/** How far one hand-off of rows got. */
export interface RowsOutcome {
  /** Outcomes of the first rows sent, in order (all of them, or fewer when it stopped). */
  done: RowOutcome[];
  /** A row after `done` that failed by itself (its worker stopped in it); the rows between did not count and may run again. */
  failed?: { index: number; error: PlughostError };
  /** Why the rows after `done` must not be tried again (deadline, cancelled, a controller that cannot start). */
  rest?: PlughostError;
  /**
   * The one invoke-batch entry trapped, ran out of memory or ran past its limit: it wrote
   * nothing and says nothing of which row did it, so its rows go again one by one.
   */
  entryFailed?: PlughostError;
}

/**
 * Room a row's outcome takes in a batch's response besides its bytes (a value's, or a
 * message's): at most its tags and lengths, and a failure's kind and code.
 */
export const ROW_ENVELOPE_BYTES = 48;

/** A row refused for the response cap: short, so that it fits the room held back for a row. */
const NOT_COMMITTED = "not committed: the batch's results together are over grpc.maxSendMessageBytes (send fewer rows per batch)";

/** Bytes a row's outcome is counted as in a batch's response budget. */
export function rowCost(o: RowOutcome, reserve: number): number {
  if (o.ok) return o.value.byteLength + ROW_ENVELOPE_BYTES;
  if ('guestError' in o) return Buffer.byteLength(o.guestError) + ROW_ENVELOPE_BYTES;
  return o.failure.message === NOT_COMMITTED ? Math.max(reserve, Buffer.byteLength(NOT_COMMITTED) + ROW_ENVELOPE_BYTES) : Buffer.byteLength(o.failure.message) + ROW_ENVELOPE_BYTES;
}

const EXPORT_INDEX = new Map(EXPORTS.map((e, i) => [e, i]));
const FAILURE: Partial<Record<number, { code: 'TRAP' | 'MEMORY_LIMIT'; reason: 'trap' | 'memory' }>> = {
  [STATUS.TRAP]: { code: 'TRAP', reason: 'trap' },
  [STATUS.MEMORY]: { code: 'MEMORY_LIMIT', reason: 'memory' },
};

/** Runs `job` once: one Call, retried inside while its worker is lost before it starts. */
export function runCall(runtime: Runtime, services: CallServices, ctx: InvocationContext, job: Exclude<Job, RowsJob>): Promise<ReplyRecord> {
  return new Call(runtime, services, ctx, job).run() as Promise<ReplyRecord>;
}

/** Runs rows in one hand-off (retried while its worker is lost before it starts); see RowsOutcome. */
export function runRows(runtime: Runtime, services: CallServices, ctx: InvocationContext, job: RowsJob): Promise<RowsOutcome> {
  return new Call(runtime, services, ctx, job).run() as Promise<RowsOutcome>;
}

class Call {
  private readonly deadline: number;
  private readonly scope: KvScope;
  private access: KvAccess;
  private controller: Controller | undefined;
  private unlock: (() => void) | undefined;
  private bridged: BridgedCall | undefined;
  /** This call and the calls it made with run. */
  private tree: CallTree | undefined;
  private callId = 0;
  private leaveQuarantine: (() => void) | undefined;
  /** Until when this call may wait for its scope's write lock. */
  private lockUntil = 0;

  constructor(
    private readonly runtime: Runtime,
    private readonly services: CallServices,
    private readonly ctx: InvocationContext,
    private readonly job: Job,
  ) {
    this.deadline = ctx.deadline ?? Infinity;
    this.scope = { tenant: ctx.tenant, module: ctx.moduleName ?? runtime.name };
    this.access = job.fn === 'invoke' || job.fn === 'invokeRows' ? ctx.kvAccess : 'none';
  }

  async run(): Promise<ReplyRecord | RowsOutcome> {
    const rt = this.runtime;
    try {
      const name = this.job.fn === 'describe' ? undefined : this.job.name;
      if (this.access === 'write' && rt.knownWriteable(name) === false) this.access = 'read';
      const store = this.services.store;
      this.lockUntil = Date.now() + Math.max(0, Math.min(this.deadline - Date.now(), this.services.acquireTimeoutMs));
      // a module that recently spun past its limit waits here rather than take every worker
      const entering = rt.quarantine.enter(this.lockUntil - Date.now(), `module ${this.scope.module}`);
      if (entering) this.leaveQuarantine = await entering;
      // writers of a scope take turns, in the order they came, before any worker is involved
      if (store && this.access === 'write' && rt.writesKv) await this.lock(store);
      const retryUntil = Math.min(this.deadline, Date.now() + this.services.acquireTimeoutMs);
      for (;;) {
        try {
          return await this.attempt(name);
        } catch (e) {
          this.fail(e);
          if (!(e instanceof WorkerLostError) || rt.closed || Date.now() >= retryUntil) throw e;
        }
      }
    } finally {
      this.tree?.close((id) => this.services.endBridgedCall(id));
      this.releaseLock();
      this.leaveQuarantine?.();
      if (this.callId) this.services.endBridgedCall(this.callId);
    }
  }

  /** Checks out a controller and runs the job on it, all under one time budget. */
  private async attempt(name: string | undefined): Promise<ReplyRecord | RowsOutcome> {
    const rt = this.runtime;
    this.controller = await rt.pool.acquire(this.deadline, this.ctx.signal, this.services.acquireTimeoutMs);
    const started = performance.now();
    if (this.access === 'write' && rt.knownWriteable(name) === undefined && rt.component.exports.has('functionWriteable')) {
      const w = await this.handOff({ fn: 'functionWriteable', name }, 'none', started);
      const writeable = w.status === STATUS.OK && w.value === true;
      rt.rememberWriteable(name, writeable);
      if (!writeable) {
        this.access = 'read';
        this.releaseLock();
      }
    }
    if (this.job.fn !== 'invokeRows') return await this.settle(await this.handOff(this.job, this.access, started));
    let reply: ReplyRecord;
    try {
      reply = await this.handOff(this.job, this.access, started);
    } catch (e) {
      const progress = rowsProgressOf(e);
      if (!progress || !isPlughostError(e)) throw e;
      // its worker stopped in a row: the rows it sent back before are settled like any
      this.fail(e);
      const flags = this.access === 'none' ? 0 : RFLAG.KV_READ;
      return this.settleRows(this.job, { status: STATUS.EXPIRED, flags, value: undefined, commit: undefined, rows: progress.rowsDone }, { at: progress.rowRunning, error: e });
    }
    return await this.settleRows(this.job, reply);
  }

  private async lock(store: KvStore): Promise<void> {
    const scope = this.scope;
    try {
      // waited for like a controller: within the deadline and acquireTimeoutMs (and the store's own cap)
      this.unlock = await store.lockScope(scope, Math.max(0, this.lockUntil - Date.now()));
    } catch (e) {
      if (e instanceof KvOpError) throw new PlughostError('POOL_EXHAUSTED', `${e.message} (tenant ${scope.tenant}, module ${scope.module})`);
      throw e;
    }
  }

  private releaseLock(): void {
    this.unlock?.();
    this.unlock = undefined;
  }

  /** One request to the controller's worker, within what is left of the call's budget. */
  private async handOff(job: Job, access: KvAccess, started: number): Promise<ReplyRecord> {
    const scope = this.scope;
    const c = this.controller!;
    const rt = this.runtime;
    const spent = performance.now() - started;
    // rows each have the call's limit (the worker restarts the clock per row); one invoke-batch entry has it once per row
    const limit = job.fn === 'invokeRows' && job.entry ? Math.min(rt.limits.maxExecutionMs * job.rows.length, Math.max(rt.limits.maxExecutionMs, this.services.batchEntryMaxMs)) : rt.limits.maxExecutionMs;
    const budget = Math.min(limit - spent, this.deadline - Date.now());
    if (budget <= 0) throw this.releaseWith(new PlughostError('TIMEOUT', 'the deadline passed before the call could start'));
    if (this.ctx.signal?.aborted) throw this.releaseWith(new PlughostError('CANCELLED', 'the caller cancelled'));
    let flags = 0;
    if (!c.started) {
      flags |= FLAG.CREATE | (rt.component.exports.has('init') ? FLAG.INIT : 0);
      c.worker.loadModule(rt.loadMessage());
    }
    if (access !== 'none' && this.services.store) {
      flags |= access === 'write' ? FLAG.KV_WRITE | FLAG.KV_READ : FLAG.KV_READ;
      if (this.services.kvInWorkers) flags |= FLAG.KV_LOCAL;
    }
    const invokes = job.fn === 'invoke' || job.fn === 'invokeRows';
    if (invokes && (rt.usesBridge || (rt.usesKv && !(flags & FLAG.KV_LOCAL)))) {
      // host calls the main thread serves (log, sql, run, KV of a store the worker cannot read)
      // find the call by its id; a retry starts over with a fresh transaction
      this.bridged?.txn?.rollback();
      // the watchdog's clock (worker-host.ts), so that a host call's wait and the call's limit agree
      const handedAt = performance.timeOrigin + performance.now();
      const worker = c.worker;
      // a row's clock restarts per row: the worker publishes when its row started
      const endsAt = job.fn === 'invokeRows' && !job.entry ? () => Math.min(this.deadline, worker.runningSinceMs + limit) : () => Math.min(this.deadline, handedAt + budget);
      const batchRows = job.fn === 'invokeRows' ? job.batchRows : undefined;
      const row =
        job.fn === 'invokeRows'
          ? () => {
              const r = worker.runningRow;
              return r < 0 ? undefined : batchRows ? batchRows[r] : r;
            }
          : () => undefined;
      // a retry starts a fresh tree too: what nested calls of the lost attempt held is let go
      this.tree?.close((id) => this.services.endBridgedCall(id));
      this.tree = rt.callsRun ? new CallTree(rt, scopeId(scope), () => this.unlock !== undefined) : undefined;
      const state = { access, lockHeld: this.unlock !== undefined, txn: undefined, row, endsAt, worker, depth: 0, tree: this.tree };
      if (this.bridged) Object.assign(this.bridged, state);
      else this.callId = this.services.beginBridgedCall((this.bridged = { ctx: this.ctx, runtime: rt, scope, ...state }));
    }
    // the lock holder reads through the scope's commits still on their way into the store
    const overlay = invokes && flags & FLAG.KV_LOCAL && access === 'write' && this.unlock ? this.services.store!.overlayOf?.(scope) : undefined;
    c.calls++;
    const pending = c.worker.call(
      {
        controllerId: c.id,
        moduleId: rt.moduleId,
        callId: invokes ? this.callId : 0,
        flags,
        fn: EXPORT_INDEX.get(job.fn === 'invokeRows' ? (job.entry ? 'invokeBatch' : 'invoke') : job.fn)!,
        deadlineAt: this.deadline,
        overlay,
        name: 'name' in job ? job.name : undefined,
        tenant: scope.tenant,
        kvModule: scope.module,
        args: job.fn === 'invoke' ? job.args : EMPTY,
        rows: job.fn === 'invokeRows' ? job.rows : undefined,
      },
      Math.ceil(budget),
      spent >= 1 ? `the call's time limit of ${rt.limits.maxExecutionMs} ms (${Math.round(spent)} ms of it went to an earlier step of the call)` : job.fn === 'invokeRows' ? (job.entry ? `the time limit of ${limit} ms for invoke-batch of ${job.rows.length} rows (${rt.limits.maxExecutionMs} ms per row)` : `the row's time limit of ${limit} ms`) : undefined,
      job.fn === 'invokeRows' ? this.ctx.signal : undefined,
    );
    rt.pool.unclaim(c);
    const reply = await pending;
    if (reply.flags & RFLAG.CREATED) rt.pool.started(c);
    if (reply.status === STATUS.EXPIRED && !reply.rows) throw this.releaseWith(new PlughostError('TIMEOUT', String(reply.value)));
    if (reply.status === STATUS.INIT_FAILED) throw this.dropWith('init', new PlughostError('INIT_FAILED', `init failed: ${String(reply.value)}`));
    const failure = FAILURE[reply.status];
    // a call with rows that ran stopped at a failing row: settleRows says which
    if (failure && !(reply.rows && !(reply.flags & RFLAG.STARTING))) {
      const what = reply.flags & RFLAG.STARTING ? 'starting a controller failed' : job.fn === 'invoke' ? '' : `${job.fn} failed`;
      throw this.dropWith(failure.reason, new PlughostError(failure.code, what ? `${what}: ${String(reply.value)}` : String(reply.value)));
    }
    return reply;
  }

  /** The controller is unharmed (the call did not run): back to the pool. */
  private releaseWith(e: PlughostError): PlughostError {
    if (this.controller) this.runtime.pool.release(this.controller);
    this.controller = undefined;
    return e;
  }

  private dropWith(reason: 'init' | 'trap' | 'memory', e: PlughostError): PlughostError {
    if (this.controller) this.runtime.pool.drop(this.controller, reason);
    this.controller = undefined;
    return e;
  }

  /** A finished call: the controller back to the pool, then its writes durable (or its reads' data). */
  private async settle(reply: ReplyRecord): Promise<ReplyRecord> {
    const scope = this.scope;
    const c = this.controller!;
    this.controller = undefined;
    this.runtime.pool.release(c);
    const max = this.ctx.maxResultBytes;
    if (max !== undefined && reply.status === STATUS.OK && reply.value instanceof Uint8Array && reply.value.byteLength > max) {
      // nobody could be sent this answer: the call must not have happened (fail() rolls back)
      throw new PlughostError('RESULT_TOO_LARGE', `the result is ${reply.value.byteLength} bytes, over the ${max} bytes a response may carry (grpc.maxSendMessageBytes, less room for the envelope); nothing the call wrote was committed`);
    }
    const store = this.services.store;
    if (!store) return reply;
    const txn = this.bridged?.txn;
    const tree = this.tree;
    // the store failed under the call (a shared database gone, a conflict, an operation with
    // no answer in time): whatever the guest made of its err, nothing is kept
    const failedUnder = txn?.failure ?? this.bridged?.kvFailure ?? tree?.kvFailure ?? [...(tree?.txns.values() ?? [])].find((e) => e.txn.failure)?.txn.failure;
    if (reply.status !== STATUS.OK || failedUnder) txn?.rollback();
    if (failedUnder) throw failedUnder;
    let scopesWritten = 0;
    try {
      const t0 = performance.now();
      let wrote = false;
      if (reply.status === STATUS.OK) {
        // its own writes, and those of the calls it made with run (held until now)
        const local = tree?.takeCommits(-1) ?? [];
        if (reply.commit) local.unshift({ scope, commit: reply.commit });
        scopesWritten = local.length + (tree?.txns.size ?? 0);
        const landing = local.map((n) => store.commit(n.scope, n.commit));
        // transactions of a store the workers cannot read commit with their locks held
        if (txn) wrote = await txn.commit();
        for (const { txn: t } of tree?.txns.values() ?? []) wrote = (await t.commit()) || wrote;
        // the next writers read through these commits until LMDB has them
        this.releaseLock();
        tree?.releaseLocks();
        for (const l of landing) {
          await l.visible;
          await l.durable;
        }
        wrote ||= landing.length > 0;
      }
      if (wrote) this.services.committed((performance.now() - t0) / 1000);
    } catch (e) {
      // a tree that wrote several scopes commits each on its own (each all or nothing)
      const what = scopesWritten > 1 ? 'could not all be committed; some of them may have been made (each scope\'s writes are committed on their own)' : 'could not be committed, and none was made';
      throw new PlughostError('UNAVAILABLE', `the call's KV writes ${what}: ${messageOf(e)}`, { cause: e });
    }
    this.releaseLock();
    // what it read may be a commit still on its way to disk: answer only once that is durable
    if (reply.flags & RFLAG.KV_READ || txn?.didRead || tree?.didRead || [...(tree?.txns.values() ?? [])].some((e) => e.txn.didRead)) await store.readBarrier();
    return reply;
  }

  /**
   * A hand-off of rows is back: the controller to the pool (or dropped, if a row trapped),
   * each row's result checked against the response budget and its writes committed in row
   * order, then answered once those are durable. A row whose commit fails is UNAVAILABLE.
   */
  private async settleRows(job: RowsJob, reply: Pick<ReplyRecord, 'status' | 'rows' | 'commit' | 'flags' | 'value'>, stopped?: { at: number; error: PlughostError }): Promise<RowsOutcome> {
    const c = this.controller;
    this.controller = undefined;
    const pool = this.runtime.pool;
    if (c) {
      if (reply.status === STATUS.TRAP) pool.drop(c, 'trap');
      else if (reply.status === STATUS.MEMORY) pool.drop(c, 'memory');
      else pool.release(c);
    }
    const store = this.services.store;
    const scope = this.scope;
    const results = reply.rows ?? [];
    const done: RowOutcome[] = new Array(results.length);
    const commits: Promise<unknown>[] = [];
    const committedAt: number[] = [];
    const t0 = performance.now();
    const max = job.resultBudget;
    const reserve = this.ctx.resultRowReserve ?? 0;
    let total = 0;
    let tooLarge = false;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (r.status === STATUS.OK) {
        const value = r.value as Uint8Array;
        const ok: RowOutcome = { ok: true, value };
        // room for this row, and at least the least answer of each row still to come
        if (max !== undefined && total + rowCost(ok, reserve) + (job.rows.length - i - 1) * reserve > max) {
          tooLarge = true;
          done[i] = { ok: false, failure: new PlughostError('RESULT_TOO_LARGE', NOT_COMMITTED) };
          total += rowCost(done[i]!, reserve);
          // the rows after it read through its writes (and its nested calls'), which are not made: they run again
          if ((r.commit || this.tree?.wrote(i)) && !job.entry) {
            done.length = i + 1;
            stopped = undefined;
            reply = { ...reply, status: STATUS.OK };
            break;
          }
          continue;
        }
        total += rowCost(ok, reserve);
        // the row's own writes, and those of the calls it made with run
        const nested = job.entry ? [] : (this.tree?.takeCommits(i) ?? []);
        if (r.commit) nested.unshift({ scope, commit: r.commit });
        if (store) {
          for (const n of nested) {
            const { visible, durable } = store.commit(n.scope, n.commit);
            commits.push(Promise.all([visible, durable]));
            committedAt.push(i);
          }
        }
        done[i] = ok;
      } else {
        const message = String(r.value);
        done[i] = r.status === STATUS.GUEST_ERROR ? { ok: false, guestError: message } : { ok: false, failure: new PlughostError(r.status === STATUS.MEMORY ? 'MEMORY_LIMIT' : 'TRAP', message) };
        total += rowCost(done[i]!, reserve);
      }
    }
    // one invoke-batch entry is one transaction: all of its rows' results go out, or none
    const entryWrites = job.entry && reply.status === STATUS.OK ? (this.tree?.takeCommits(-1) ?? []) : [];
    if (reply.commit && job.entry) entryWrites.unshift({ scope, commit: reply.commit });
    if (entryWrites.length && store && reply.status === STATUS.OK) {
      if (tooLarge) {
        for (let i = 0; i < done.length; i++) if (done[i]!.ok) done[i] = { ok: false, failure: new PlughostError('RESULT_TOO_LARGE', NOT_COMMITTED) };
      } else {
        for (const n of entryWrites) {
          const { visible, durable } = store.commit(n.scope, n.commit);
          commits.push(Promise.all([visible, durable]));
          committedAt.push(-1);
        }
      }
    }
    // the next writer reads through these commits until LMDB has them
    this.releaseLock();
    this.tree?.releaseLocks();
    const failed = await Promise.allSettled(commits);
    let anyCommitted = false;
    failed.forEach((f, j) => {
      if (f.status === 'fulfilled') return (anyCommitted = true);
      const e = new PlughostError('UNAVAILABLE', `the row's KV writes could not be committed, and none was made: ${messageOf(f.reason)}`, { cause: f.reason });
      const at = committedAt[j]!;
      if (at >= 0) done[at] = { ok: false, failure: e };
      else for (let i = 0; i < done.length; i++) done[i] = { ok: false, failure: e };
    });
    if (anyCommitted) this.services.committed((performance.now() - t0) / 1000);
    if (store && (reply.flags & RFLAG.KV_READ || this.tree?.didRead)) await store.readBarrier();
    if (job.entry && !(reply.flags & RFLAG.BAD_COUNT) && (stopped || reply.status === STATUS.TRAP || reply.status === STATUS.MEMORY)) {
      return { done: [], entryFailed: stopped?.error ?? new PlughostError(reply.status === STATUS.MEMORY ? 'MEMORY_LIMIT' : 'TRAP', String(results[0]?.value)) };
    }
    const out: RowsOutcome = { done };
    if (stopped) {
      // stopped while its controller was starting: nothing to run again
      if (stopped.at < results.length) out.rest = stopped.error;
      else out.failed = { index: stopped.at, error: stopped.error };
    } else if (reply.status === STATUS.EXPIRED) {
      out.rest = this.ctx.signal?.aborted ? new PlughostError('CANCELLED', 'the caller cancelled before the row started') : new PlughostError('TIMEOUT', 'the deadline passed before the row could start');
    }
    return out;
  }

  /** After an exception: a controller still checked out is released if unharmed, else dropped. */
  private fail(e: unknown): void {
    this.bridged?.txn?.rollback();
    const c = this.controller;
    if (!c) return;
    this.controller = undefined;
    const pool = this.runtime.pool;
    if (e instanceof CallMovedError) pool.release(c);
    else if (isPlughostError(e, 'TIMEOUT')) {
      // it ran past its limit (a call that expired before it started holds no controller)
      pool.drop(c, 'timeout');
      this.runtime.quarantine.timedOut();
    }
    else if (isPlughostError(e, 'MEMORY_LIMIT')) pool.drop(c, 'memory');
    else pool.drop(c, e instanceof WorkerLostError ? 'other' : 'trap');
  }
}

const EMPTY = new Uint8Array(0);
