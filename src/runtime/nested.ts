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
import type { KvAccess, KvCommit, KvLimits, KvScope, KvStore, KvTransaction } from '../kv/types.js';
import type { BridgedCall } from './call.js';
import type { Controller } from './controller.js';
import type { ControlMessage } from './protocol.js';
import type { Runtime } from './runtime.js';
import { FLAG, STATUS } from './shared/wire.js';

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
}

interface OpenNested {
  /** Takes the tree's transactions (a store the workers cannot read) back to where they stood when it began. */
  undo: () => void;
  runtime: Runtime;
  controller: Controller;
  target: RunTarget;
  fn: string | undefined;
  startedAt: number;
}

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
  /** A nested call read committed data (the answer then waits until it is durable). */
  didRead = false;
  readonly open = new Map<number, OpenNested>();

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

  /** The tree is over (committed, or failed): roll back what is left, free what it holds. */
  close(endBridged: (callId: number) => void): void {
    for (const [callId, o] of this.open) {
      o.runtime.pool.drop(o.controller, 'other');
      endBridged(callId);
    }
    this.open.clear();
    this.held.clear();
    for (const { txn } of this.txns.values()) txn.rollback();
    this.txns.clear();
    this.commits.length = 0;
    this.releaseLocks();
  }

  /** The transaction of `scope` for a call of this tree with `access`: the tree's one, made (or, for a first writer, made anew) here. */
  txnFor(store: KvStore, scope: KvScope, access: KvAccess, limits: KvLimits, lockHeld: boolean): KvTransaction {
    const id = scopeId(scope);
    let e = this.txns.get(id);
    // one opened by readers wrote nothing: a writer replaces it with one that may write
    if (!e || (access === 'write' && e.access !== 'write')) {
      if (e) {
        this.didRead ||= e.txn.didRead;
        e.txn.rollback();
      }
      e = { txn: store.begin(scope, access, limits, { lockHeld }), access };
      this.txns.set(id, e);
    }
    return e.txn;
  }

  /** Where the tree's transactions stand, to take them back to when a nested call fails. */
  savepoint(): () => void {
    const before = new Map([...this.txns].map(([id, e]) => [id, { e, back: e.txn.savepoint?.() }]));
    return () => {
      for (const [id, e] of this.txns) {
        const was = before.get(id);
        if (was?.e === e) was.back?.();
        else {
          // opened (or reopened for a writer) by the failed call: nothing of it stays
          this.didRead ||= e.txn.didRead;
          e.txn.rollback();
          if (was) this.txns.set(id, was.e);
          else this.txns.delete(id);
        }
      }
    };
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
    if (!tree) return { err: `run ${ref}: this call cannot make nested calls` };
    if (depth > this.host.maxRunDepth) return { err: `run ${ref}: the chain of calls would be ${depth} deep, past maxRunDepth (${this.host.maxRunDepth})` };
    if (ctx.signal?.aborted) return { err: `run ${ref}: the caller cancelled` };
    const endsAt = call.endsAt();
    // waiting (to resolve, for a controller, for a lock) is bounded like any host call
    const waitUntil = Math.min(endsAt, Date.now() + this.host.hostCallTimeoutMs);
    if (waitUntil <= Date.now()) return { err: `run ${ref}: the call has no time left` };
    let target: RunTarget;
    try {
      target = await within(ctx.resolveRun ? ctx.resolveRun(ref, fn) : Promise.resolve(this.loaded(ref, ctx.kvAccess)), waitUntil - Date.now(), `resolving ${ref}`);
    } catch (e) {
      return { err: `run ${ref}: ${messageOf(e)}` };
    }
    const rt = target.runtime;
    const name = target.moduleName;
    const held = tree.held.get(rt) ?? 0;
    let controller: Controller;
    try {
      if (rt.closed) throw new PlughostError('UNAVAILABLE', 'the module is being unloaded');
      controller = await rt.pool.acquireOn(call.worker, held, waitUntil, ctx.signal, this.host.acquireTimeoutMs);
    } catch (e) {
      target.finished?.(e instanceof PlughostError ? e.code : 'INTERNAL', (performance.now() - startedAt) / 1000);
      return { err: `run ${name}: ${messageOf(e)}` };
    }
    tree.held.set(rt, held + 1);
    const scope: KvScope = { tenant: ctx.tenant, module: name };
    const store = this.host.store;
    let access: KvAccess = store && rt.usesKv ? target.kvAccess : 'none';
    if (access === 'write' && (!rt.writesKv || rt.knownWriteable(fn) === false)) access = 'read';
    let overlay: [Uint8Array, Uint8Array | null][] | undefined;
    if (access === 'write') {
      const id = scopeId(scope);
      // a chain never waits for a lock it holds itself
      if (!(id === tree.topScope && tree.topLocked()) && !tree.locks.has(id)) {
        try {
          tree.locks.set(id, await store!.lockScope(scope, Math.max(0, waitUntil - Date.now())));
        } catch (e) {
          this.settle(tree, rt, controller, STATUS.OK);
          target.finished?.('POOL_EXHAUSTED', (performance.now() - startedAt) / 1000);
          return { err: `run ${name}: ${messageOf(e)} (tenant ${scope.tenant}, module ${name})` };
        }
        if (this.host.kvInWorkers) overlay = store!.overlayOf?.(scope);
      }
    }
    const worker = call.worker;
    const load = worker.loaded.has(rt.moduleId) ? undefined : rt.loadMessage();
    if (load) worker.loaded.add(rt.moduleId);
    // its own limit, within what is left of its caller's
    const ownEnd = Date.now() + rt.limits.maxExecutionMs;
    const runsUntil = Math.min(endsAt, ownEnd);
    const nested: BridgedCall = {
      ctx: { ...ctx, moduleName: name, kvAccess: target.kvAccess },
      runtime: rt,
      access,
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
    tree.open.set(callId, { undo: tree.savepoint(), runtime: rt, controller, target, fn, startedAt });
    worker.enterNested(runsUntil, ownEnd <= endsAt ? `the time limit of ${name} (${rt.limits.maxExecutionMs} ms)` : "what was left of its caller's time limit");
    let flags = controller.started ? 0 : FLAG.CREATE | (rt.component.exports.has('init') ? FLAG.INIT : 0);
    if (access !== 'none') {
      flags |= access === 'write' ? FLAG.KV_WRITE | FLAG.KV_READ : FLAG.KV_READ;
      if (this.host.kvInWorkers) flags |= FLAG.KV_LOCAL;
    }
    const plan: RunPlan = {
      callId,
      controllerId: controller.id,
      moduleId: rt.moduleId,
      load,
      flags,
      tenant: scope.tenant,
      kvModule: name,
      overlay,
      checkWriteable: access === 'write' && rt.knownWriteable(fn) === undefined && rt.component.exports.has('functionWriteable'),
    };
    return { ok: plan };
  }

  /**
   * `runEnd`: the worker finished a nested call (`status`: a wire STATUS). Its controller
   * goes back to the pool or is dropped; a bridged transaction of its waits for the tree.
   */
  end(call: BridgedCall, callId: number, status: number, created: boolean, writeable: boolean | undefined, didRead: boolean): Answer {
    const tree = call.tree;
    const open = tree?.open.get(callId);
    if (!tree || !open) return { ok: undefined };
    tree.open.delete(callId);
    call.worker.leaveNested();
    const { runtime: rt, controller, target } = open;
    if (created) rt.pool.started(controller);
    if (writeable !== undefined) rt.rememberWriteable(open.fn, writeable);
    if (didRead) tree.didRead = true;
    this.settle(tree, rt, controller, status);
    this.host.endBridgedCall(callId);
    // a nested call that failed leaves nothing in the tree's transactions
    if (status !== STATUS.OK) open.undo();
    const outcome = status === STATUS.OK ? 'ok' : status === STATUS.GUEST_ERROR ? 'guest_error' : status === STATUS.INIT_FAILED ? 'INIT_FAILED' : status === STATUS.MEMORY ? 'MEMORY_LIMIT' : 'TRAP';
    target.finished?.(outcome, (performance.now() - open.startedAt) / 1000);
    return { ok: undefined };
  }

  /** `runCommits`: the local-store writes nested calls made to other scopes, for the top-level call (or its row) to commit. */
  commits(call: BridgedCall, row: number, records: { tenant: string; module: string; commit: KvCommit }[]): Answer {
    const tree = call.tree;
    if (!tree) return { ok: undefined };
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

/** `p`, or a TIMEOUT error once `ms` have passed. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new PlughostError('TIMEOUT', `${what} took longer than the ${Math.round(ms)} ms left to wait`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
