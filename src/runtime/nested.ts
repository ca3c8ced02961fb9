// `run` from a guest, on the main thread's side. The nested call runs in its caller's
// worker, inside the import: that worker is blocked there anyway, so a chain of calls
// needs one worker however deep it goes and never waits for a worker its own calls hold.
// Here: resolve the target under the caller's identity, check depth and time, check out a
// controller on that worker (never waiting for a permit the chain itself holds), take the
// callee scope's write lock, and hand the worker a plan; when the worker is done, settle
// the controller. What nested calls write is held in the call tree and committed with the
// top-level call, or dropped with it (call.ts).
import { PlughostError, messageOf } from '../errors.js';
import { scopeId } from '../kv/keys.js';
import type { KvAccess, KvCommit, KvLimits, KvScope, KvStore, KvTransaction, Savepoint } from '../kv/types.js';
import type { BridgedCall } from './call.js';
import type { Controller } from './controller.js';
import type { ControlMessage } from './protocol.js';
import type { Runtime } from './runtime.js';
import type { NestedLimit } from './worker-host.js';
import { FLAG, STATUS } from './shared/wire.js';
import { within } from '../util/within.js';

/** What a `run` reference resolved to, under the caller's identity. */
export interface RunTarget {
  runtime: Runtime;
  /** The callee's module name: its KV scope, and what logs and metrics call it. */
  moduleName: string;
  /** The caller's KV permission (it is lowered to read for a function that is not writeable). */
  kvAccess: KvAccess;
  /** Told how the nested call ended (outcome: ok, guest_error or an error code), for the caller's metrics. */
  finished?(outcome: string, seconds: number): void;
}

/** What the worker needs to run a nested call (sent over the bridge as the import's answer). */
export interface RunPlan {
  callId: number;
  controllerId: number;
  moduleId: number;
  /** The module's artifacts, when this worker has not been sent them yet. */
  load: Extract<ControlMessage, { t: 'load' }> | undefined;
  flags: number;
  tenant: string;
  kvModule: string;
  /** Commits of the scope still on their way into LMDB, for a writer that just took its lock. */
  overlay: [Uint8Array, Uint8Array | null][] | undefined;
  /** Ask the guest's function-writeable first (write access, answer not cached yet). */
  checkWriteable: boolean;
  /**
   * The scope's write lock was taken just now, mid-call: the worker's read snapshot may
   * predate commits that landed before it, so the worker takes a fresh one.
   */
  freshRead: boolean;
}

interface OpenNested {
  /** Where the tree's transactions (a store the workers cannot read) stood when it began. */
  savepoint: Savepoint;
  runtime: Runtime;
  controller: Controller;
  target: RunTarget;
  fn: string | undefined;
  startedAt: number;
  /** Its limit on the watchdog of its worker. */
  limit: NestedLimit;
  /** The access it was planned with (before function-writeable's answer). */
  access: KvAccess;
  /** Its module was sent to the worker with the plan: loaded there once the worker says it ended. */
  sentLoad: boolean;
}

/** Epoch ms on the clock the watchdog keeps (worker-host.ts). */
const now = () => performance.timeOrigin + performance.now();

/**
 * A top-level call and every call made under it with `run`: what they hold (permits,
 * scope locks) and what the nested ones wrote, to commit with the top-level call.
 */
export class CallTree {
  /** Permits of each module held by calls of this tree now. */
  readonly held = new Map<Runtime, number>();
  /** Scope write locks taken for nested writers; released once the tree's writes are committed or dropped. */
  readonly locks = new Map<string, () => void>();
  /** Local-store writes of nested calls, by the row of the top-level call that made them (-1: the call itself). */
  readonly commits: { row: number; scope: KvScope; commit: KvCommit }[] = [];
  /**
   * On a store the workers cannot read: the tree's one transaction per scope (the top-level
   * call's own among them), shared by every call of the tree on that scope, by scope id.
   */
  readonly txns = new Map<string, { txn: KvTransaction; access: KvAccess }>();
  /** Readers' transactions a writer took the place of: kept open (a failed writer puts one back) until the tree closes. */
  private readonly retired: KvTransaction[] = [];
  /** A nested call read committed data (the answer then waits until it is durable). */
  didRead = false;
  readonly open = new Map<number, OpenNested>();
  /** Bridged calls of nested calls that ended: kept until the tree closes (their log lines may still be on the way). */
  readonly ended: number[] = [];
  /** The top-level call is over: nothing may be taken for the tree any more. */
  closed = false;
  /** A KV operation of one of its calls got no answer in time (it may still land): the tree must not commit. */
  kvFailure: PlughostError | undefined;

  constructor(
    /** The top-level call's module: the call holds one of its permits. */
    top: Runtime,
    readonly topScope: string,
    /** The top-level call holds its own scope's lock now. */
    readonly topLocked: () => boolean,
  ) {
    this.held.set(top, 1);
  }

  /** Nested writes to commit with `row` (-1: with the call); taken out of the tree. */
  takeCommits(row: number): { scope: KvScope; commit: KvCommit }[] {
    const mine = this.commits.filter((c) => c.row === row);
    if (mine.length) this.commits.splice(0, this.commits.length, ...this.commits.filter((c) => c.row !== row));
    return mine;
  }

  /** Whether nested calls of `row` wrote anything. */
  wrote(row: number): boolean {
    return this.commits.some((c) => c.row === row);
  }

  /** The tree is over (committed, or failed): roll back what is left, free what it holds. Idempotent. */
  close(endBridged: (callId: number) => void): void {
    this.closed = true;
    for (const [callId, o] of this.open) {
      o.runtime.pool.drop(o.controller, 'other');
      o.controller.worker.leaveNested(o.limit);
      endBridged(callId);
    }
    this.open.clear();
    for (const callId of this.ended.splice(0)) endBridged(callId);
    this.held.clear();
    for (const { txn } of this.txns.values()) txn.rollback();
    this.txns.clear();
    for (const t of this.retired.splice(0)) t.rollback();
    this.commits.length = 0;
    this.releaseLocks();
  }

  /** The transaction of `scope` for a call of this tree with `access`: the tree's one, made (or, for a first writer, made anew) here. */
  txnFor(store: KvStore, scope: KvScope, access: KvAccess, limits: KvLimits, lockHeld: boolean): KvTransaction {
    const id = scopeId(scope);
    let e = this.txns.get(id);
    // one opened by readers wrote nothing: a writer takes its place with one that may write
    if (!e || (access === 'write' && e.access !== 'write')) {
      if (e) this.retired.push(e.txn);
      e = { txn: store.begin(scope, access, limits, { lockHeld }), access };
      this.txns.set(id, e);
    }
    return e.txn;
  }

  /** Where the tree's transactions stand, to take them back to when a nested call fails (`undo`), or let go when it succeeds (`release`). */
  savepoint(): Savepoint {
    const before = new Map([...this.txns].map(([id, e]) => [id, { e, back: e.txn.savepoint() }]));
    const release = () => {
      for (const { back } of before.values()) back.release();
    };
    const undo = () => {
      for (const [id, was] of before) if (this.txns.get(id) !== was.e) was.back.release();
      for (const [id, e] of [...this.txns]) {
        const was = before.get(id);
        if (was?.e === e) was.back.undo();
        else {
          // opened (or opened anew for a writer) by the failed call: nothing of it stays
          this.didRead ||= e.txn.didRead;
          e.txn.rollback();
          if (was) this.txns.set(id, was.e);
          else this.txns.delete(id);
        }
      }
    };
    return { undo, release };
  }

  releaseLocks(): void {
    for (const unlock of this.locks.values()) unlock();
    this.locks.clear();
  }
}

/** What NestedCalls needs from the manager. */
export interface NestedHost {
  readonly store: KvStore | undefined;
  readonly kvInWorkers: boolean;
  readonly acquireTimeoutMs: number;
  readonly hostCallTimeoutMs: number;
  readonly maxRunDepth: number;
  beginBridgedCall(state: BridgedCall): number;
  endBridgedCall(callId: number): void;
  /** The Runtime of a loaded module by hash (for a caller whose context resolves nothing itself). */
  get(hash: string): Runtime | undefined;
}

type Answer = { ok: unknown } | { err: string };

export class NestedCalls {
  constructor(private readonly host: NestedHost) {}

  /** `runBegin`: everything up to the plan the worker runs the nested call by. */
  async begin(call: BridgedCall, ref: string, fn: string | undefined): Promise<Answer> {
    const startedAt = performance.now();
    const tree = call.tree;
    const ctx = call.ctx;
    const depth = call.depth + 1;
    if (!tree || tree.closed) return { err: `run ${ref}: this call cannot make nested calls` };
    if (depth > this.host.maxRunDepth) return { err: `run ${ref}: the chain of calls would be ${depth} deep, past maxRunDepth (${this.host.maxRunDepth})` };
    if (ctx.signal?.aborted) return { err: `run ${ref}: the caller cancelled` };
    const endsAt = call.endsAt();
    // waiting (to resolve, for a controller, for a lock) is bounded like any host call
    const waitUntil = Math.min(endsAt, now() + this.host.hostCallTimeoutMs);
    if (waitUntil <= now()) return { err: `run ${ref}: the call has no time left` };
    let target: RunTarget;
    try {
      target = await waitFor(ctx.resolveRun ? ctx.resolveRun(ref, fn) : Promise.resolve(this.loaded(ref, ctx.kvAccess)), waitUntil - now(), `resolving ${ref}`, ctx.signal);
    } catch (e) {
      return { err: `run ${ref}: ${messageOf(e)}` };
    }
    const rt = target.runtime;
    const name = target.moduleName;
    const failed = (code: string, e: unknown): Answer => {
      target.finished?.(code, (performance.now() - startedAt) / 1000);
      return { err: `run ${name}: ${messageOf(e)}` };
    };
    if (tree.closed) return failed('CANCELLED', 'the call that made it is over');
    const held = tree.held.get(rt) ?? 0;
    let controller: Controller;
    try {
      if (rt.closed) throw new PlughostError('UNAVAILABLE', 'the module is being unloaded');
      controller = await rt.pool.acquireOn(call.worker, held, Date.now() + (waitUntil - now()), ctx.signal, this.host.acquireTimeoutMs);
    } catch (e) {
      return failed(e instanceof PlughostError ? e.code : 'INTERNAL', e);
    }
    // the call that made it may have ended while it waited: then nothing is taken for it
    if (tree.closed) {
      rt.pool.release(controller);
      return failed('CANCELLED', 'the call that made it is over');
    }
    tree.held.set(rt, held + 1);
    const scope: KvScope = { tenant: ctx.tenant, module: name };
    const store = this.host.store;
    let access: KvAccess = store && rt.usesKv ? target.kvAccess : 'none';
    if (access === 'write' && (!rt.writesKv || rt.knownWriteable(fn) === false)) access = 'read';
    let overlay: [Uint8Array, Uint8Array | null][] | undefined;
    let freshRead = false;
    if (access === 'write') {
      const id = scopeId(scope);
      // a chain never waits for a lock it holds itself
      if (!(id === tree.topScope && tree.topLocked()) && !tree.locks.has(id)) {
        let unlock: () => void;
        try {
          unlock = await waitFor(store!.lockScope(scope, Math.max(0, waitUntil - now())), waitUntil - now() + 1000, `the write lock of ${name}`, ctx.signal, (late) => late());
        } catch (e) {
          this.settle(tree, rt, controller, STATUS.OK);
          return failed('POOL_EXHAUSTED', `${messageOf(e)} (tenant ${scope.tenant}, module ${name})`);
        }
        if (tree.closed) {
          unlock();
          this.settle(tree, rt, controller, STATUS.OK);
          return failed('CANCELLED', 'the call that made it is over');
        }
        tree.locks.set(id, unlock);
        if (this.host.kvInWorkers) {
          overlay = store!.overlayOf?.(scope);
          freshRead = true;
        }
      }
    }
    const worker = call.worker;
    // sent with the plan until the worker says it ran the call (then it surely has the module)
    const load = worker.loaded.has(rt.moduleId) ? undefined : rt.loadMessage();
    // its own limit, within what is left of its caller's
    const ownEnd = now() + rt.limits.maxExecutionMs;
    const runsUntil = Math.min(endsAt, ownEnd);
    const checkWriteable = access === 'write' && rt.knownWriteable(fn) === undefined && rt.component.exports.has('functionWriteable');
    const nested: BridgedCall = {
      ctx: { ...ctx, moduleName: name, kvAccess: target.kvAccess },
      runtime: rt,
      // over the bridge a call may write only once its function-writeable said yes (runWriteable)
      access: checkWriteable && !this.host.kvInWorkers ? 'read' : access,
      scope,
      lockHeld: access === 'write',
      worker,
      depth,
      tree,
      parent: call,
      row: call.row,
      endsAt: () => runsUntil,
    };
    const callId = this.host.beginBridgedCall(nested);
    const limit = worker.enterNested(runsUntil, ownEnd <= endsAt ? `the time limit of ${name} (${rt.limits.maxExecutionMs} ms)` : "what was left of its caller's time limit");
    tree.open.set(callId, { savepoint: tree.savepoint(), runtime: rt, controller, target, fn, startedAt, limit, access, sentLoad: load !== undefined });
    let flags = controller.started ? 0 : FLAG.CREATE | (rt.component.exports.has('init') ? FLAG.INIT : 0);
    if (access !== 'none') {
      flags |= access === 'write' ? FLAG.KV_WRITE | FLAG.KV_READ : FLAG.KV_READ;
      if (this.host.kvInWorkers) flags |= FLAG.KV_LOCAL;
    }
    const plan: RunPlan = { callId, controllerId: controller.id, moduleId: rt.moduleId, load, flags, tenant: scope.tenant, kvModule: name, overlay, checkWriteable, freshRead };
    return { ok: plan };
  }

  /** `runWriteable`: the nested call's function-writeable answered (posted before any KV operation of it). */
  writeable(nested: BridgedCall, callId: number, writeable: boolean): Answer {
    const open = nested.tree?.open.get(callId);
    if (!open) return { ok: undefined };
    open.runtime.rememberWriteable(open.fn, writeable);
    nested.access = writeable ? open.access : 'read';
    return { ok: undefined };
  }

  /**
   * `runEnd` (posted by the worker, served before its caller's reply): the nested call is
   * over (`status`: a wire STATUS). Its controller goes back to the pool or is dropped; when
   * it failed, the tree's transactions go back to where they stood when it began.
   */
  end(call: BridgedCall, callId: number, status: number, created: boolean, writeable: boolean | undefined, didRead: boolean): Answer {
    const tree = call.tree;
    const open = tree?.open.get(callId);
    if (!tree || !open) return { ok: undefined };
    tree.open.delete(callId);
    tree.ended.push(callId);
    const { runtime: rt, controller, target } = open;
    controller.worker.leaveNested(open.limit);
    if (open.sentLoad) controller.worker.loaded.add(rt.moduleId);
    if (created) rt.pool.started(controller);
    if (writeable !== undefined) rt.rememberWriteable(open.fn, writeable);
    if (didRead) tree.didRead = true;
    this.settle(tree, rt, controller, status);
    if (status !== STATUS.OK) open.savepoint.undo();
    else open.savepoint.release();
    const outcome = status === STATUS.OK ? 'ok' : status === STATUS.GUEST_ERROR ? 'guest_error' : status === STATUS.INIT_FAILED ? 'INIT_FAILED' : status === STATUS.MEMORY ? 'MEMORY_LIMIT' : 'TRAP';
    target.finished?.(outcome, (performance.now() - open.startedAt) / 1000);
    return { ok: undefined };
  }

  /** `runCommits`: the local-store writes nested calls made to other scopes, for the top-level call (or its row) to commit. */
  commits(call: BridgedCall, row: number, records: { tenant: string; module: string; commit: KvCommit }[]): Answer {
    const tree = call.tree;
    if (!tree || tree.closed) return { err: 'the call that made these writes is over' };
    for (const r of records) {
      const writes = r.commit.writes.map(([k, v]): [Buffer, Uint8Array | null] => [Buffer.from(k.buffer, k.byteOffset, k.byteLength), v]);
      tree.commits.push({ row, scope: { tenant: r.tenant, module: r.module }, commit: { ...r.commit, writes } });
    }
    return { ok: undefined };
  }

  private settle(tree: CallTree, rt: Runtime, c: Controller, status: number): void {
    const n = (tree.held.get(rt) ?? 1) - 1;
    if (n > 0) tree.held.set(rt, n);
    else tree.held.delete(rt);
    if (status === STATUS.OK || status === STATUS.GUEST_ERROR) rt.pool.release(c);
    else rt.pool.drop(c, status === STATUS.INIT_FAILED ? 'init' : status === STATUS.MEMORY ? 'memory' : 'trap');
  }

  /** Without a resolver in the context (the runtime used as a library): a loaded module by hash, with the caller's KV access. */
  private loaded(ref: string, kvAccess: KvAccess): RunTarget {
    const runtime = this.host.get(ref);
    if (!runtime) throw new PlughostError('NOT_FOUND', `no module with hash ${ref} is loaded`);
    return { runtime, moduleName: runtime.name, kvAccess };
  }
}

/** Waits for `p` within `ms`: a TIMEOUT naming `what` after it, CANCELLED when the caller cancels. */
function waitFor<T>(p: Promise<T>, ms: number, what: string, signal?: AbortSignal, late?: (v: T) => void): Promise<T> {
  return within(p, ms, () => new PlughostError('TIMEOUT', `${what} took longer than the ${Math.round(ms)} ms left to wait`), {
    signal,
    cancelled: () => new PlughostError('CANCELLED', `the caller cancelled while waiting for ${what}`),
    late,
  });
}
