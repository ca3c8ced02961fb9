// A runtime worker: hosts controllers (jco instances) of many modules and runs the calls
// the main thread writes into its request ring, one at a time, in order. Guest code runs
// only here, never on the thread that serves gRPC: a guest that spins is stopped by
// terminating this worker. KV of the embedded store is read here directly; a call's
// writes go back with its reply for the main thread to commit. While calls keep coming
// the worker spins briefly between them instead of sleeping (a wake-up costs more than a
// small call); when they stop, it backs off and sleeps without blocking its event loop.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { mapKey, scopeKeys } from '../../kv/keys.js';
import type { RunPlan } from '../nested.js';
import { baseOf, handUp, layPending, nestedCommits, viewOf, type Frame } from './kv-frames.js';
import { KvOpError } from '../../kv/kv-error.js';
import { LmdbReader, openLmdbEnv } from '../../kv/lmdb-env.js';
import { OverlayReader } from '../../kv/layer.js';
import { KV_OPS, KvTxn } from '../../kv/txn.js';
import type { KvAccess, KvLimits } from '../../kv/types.js';
import type { ControlMessage, WorkerInit } from '../protocol.js';
import { Ring } from '../shared/ring.js';
import { EXPORTS, FLAG, REQ, RFLAG, STATUS, STATUS_LAYOUT, readRequest, writeReply, writeReplyOnPort, type CallRecord, type ReplyRecord, type RowResult } from '../shared/wire.js';
import { createBridge, type ImportResult } from './bridge.js';
import { classifyFailure } from './classify.js';
import { coreInvokeOf, directInvoke, type CoreInvoke } from './direct-invoke.js';
import { beginCall, importGuards, noteHeap, restoreBudget, saveBudget } from './guards.js';

type GuestExports = Record<string, (...a: unknown[]) => unknown>;
/** jco's sync instantiation function, from a module's glue. */
type Instantiate = (
  getCoreModule: (n: string) => WebAssembly.Module,
  imports: object,
  instantiateCore: (m: WebAssembly.Module, i: WebAssembly.Imports) => WebAssembly.Instance,
) => GuestExports;
interface LoadedModule {
  glue: string;
  coreModules: Record<string, WebAssembly.Module>;
  maxMemoryBytes: number;
  kvLimits: KvLimits;
  /** Its `invoke` may be called on the core instance (CompiledComponent.directInvoke). */
  directInvoke: boolean;
  /** It imports `run`: its calls keep their KV in frames (kv-frames.ts). */
  callsRun: boolean;
  instantiate?: Instantiate;
}
/** A controller's context, swapped per call: its host imports read it at call time. */
interface Slot {
  callId: number;
  txn: KvTxn | undefined;
  /** Its call's place in its call tree, when its module calls run and KV is local. */
  frame?: Frame | undefined;
}
interface LiveController {
  module: LoadedModule;
  exports: GuestExports;
  memory?: WebAssembly.Memory | undefined;
  slot: Slot;
  /** `invoke` without jco's wrapper, when the module allows it. */
  core: CoreInvoke | undefined;
}

const init = workerData as WorkerInit;
const requests = new Ring(init.requests);
const replies = new Ring(init.replies);
const control = init.controlPort;
/** The worker's status block (wire.ts STATUS_LAYOUT). */
const status = new Int32Array(init.status);
const runningSince = new Float64Array(init.status);
const bridge = createBridge(init.bridgePort, init.bridgeFlag, init.hostCallTimeoutMs);
const kv = init.kv ? new LmdbReader(openLmdbEnv(init.kv)) : undefined;
const modules = new Map<number, LoadedModule>();
const controllers = new Map<number, LiveController>();
/** Scope keys by tenant and module name, bounded. */
const scopes = new Map<string, Frame['scope']>();
const kvOpCounts = new Float64Array(init.kvOps);
const SPIN_MAX_US = init.spinUs;
/** Work for this long without yielding to the event loop (lmdb-js timers, the bridge port). */
const SLICE_MS = 5;
/** Longest an idle worker blocks before its event loop gets a turn. */
const IDLE_WAIT_MS = 50;

let stopping = false;
/** Seq of the call running now. */
let runningSeq = 0;

const now = () => performance.timeOrigin + performance.now();

const memoryBytes = (c: LiveController | undefined) => c?.memory?.buffer.byteLength ?? 0;

function instantiate(moduleId: number): LiveController {
  const module = modules.get(moduleId);
  if (!module) throw new Error(`module ${moduleId} is not loaded in this worker`);
  // new Function, not import(): a module evaluated this way can be garbage-collected
  module.instantiate ??= (new Function(module.glue)() as { instantiate: Instantiate }).instantiate;
  const slot: Slot = { callId: 0, txn: undefined, frame: undefined };
  let memory: WebAssembly.Memory | undefined;
  const instances: WebAssembly.Instance[] = [];
  const guards = importGuards(module.kvLimits);
  const exports = module.instantiate(
    (name) => {
      const m = module.coreModules[name];
      if (!m) throw new Error(`no core module ${name}`);
      return m;
    },
    { 'plughost:plugin/host': guards.host(hostImports(slot)) },
    (m, imports) => {
      const instance = new WebAssembly.Instance(m, guards.core(imports));
      if (instance.exports.memory instanceof WebAssembly.Memory) memory ??= instance.exports.memory;
      instances.push(instance);
      return instance;
    },
  );
  const core = module.directInvoke && instances.length === 1 ? coreInvokeOf(instances[0]!.exports) : undefined;
  return { module, exports, memory, slot, core };
}

/**
 * The `plughost:plugin/host` imports of one controller: closures over its slot, read at
 * call time. KV goes to the call's local transaction when it has one, else to the bridge.
 */
function hostImports(slot: Slot) {
  const imports = bridge.hostImports(slot);
  imports.run = (module: string, fn: string | undefined, args: Uint8Array) => runImport(slot, module, fn, args);
  // log lines go through the reply ring ahead of the call's reply, so they are never late for it
  imports.log = (level: string, message: string) => {
    if (slot.callId !== 0) reply({ seq: runningSeq, status: STATUS.LOG, flags: 0, ms: 0, memoryBytes: 0, value: { level, message: String(message).slice(0, 8192), callId: slot.callId }, commit: undefined });
  };
  KV_OPS.forEach((op, i) => {
    const viaBridge = imports[op];
    imports[op] = (...args: unknown[]) => {
      const txn = slot.txn;
      if (!txn) return viaBridge?.(...args);
      kvOpCounts[i] = (kvOpCounts[i] ?? 0) + 1;
      try {
        return { tag: 'ok', val: txn.apply(op, args) };
      } catch (e) {
        if (e instanceof KvOpError) return { tag: 'err', val: e.message };
        return { tag: 'err', val: `${op} failed in the store: ${e instanceof Error ? e.message : String(e)}` };
      }
    };
  });
  return imports;
}

/**
 * The guest's `run`: the main thread resolves the target and checks out a controller of it
 * on this worker (runBegin); the call then runs here, inside this import, and the main
 * thread settles its controller (runEnd) before the guest gets the answer.
 */
function runImport(slot: Slot, module: string, fn: string | undefined, args: Uint8Array): ImportResult {
  if (slot.callId === 0) return { tag: 'err', val: 'run called outside of a call' };
  const begun = bridge.request(slot.callId, 'runBegin', [module, fn]);
  if (begun.tag === 'err') return begun;
  const plan = begun.val as RunPlan;
  if (plan.load) loadModule(plan.load);
  const saved = saveBudget();
  const ran = runNested(slot, plan, fn, args);
  restoreBudget(saved);
  // posted, not waited for: the main thread serves it before the next bridge call or the reply
  bridge.post(slot.callId, 'runEnd', [plan.callId, ran.status, ran.created, ran.writeable, ran.didRead]);
  return ran.result;
}

function runNested(caller: Slot, plan: RunPlan, name: string | undefined, args: Uint8Array) {
  const ran = { status: STATUS.OK, created: false, writeable: undefined as boolean | undefined, didRead: false, result: { tag: 'ok', val: undefined } as ImportResult };
  const fail = (status: number, message: string) => Object.assign(ran, { status, result: { tag: 'err', val: message } });
  let c = controllers.get(plan.controllerId);
  if (plan.flags & FLAG.CREATE) {
    try {
      c = instantiate(plan.moduleId);
      if (plan.flags & FLAG.INIT) c.exports.init?.();
    } catch (e) {
      const f = failureStatus(e, c, modules.get(plan.moduleId)?.maxMemoryBytes ?? 0);
      return f.status === STATUS.GUEST_ERROR ? fail(STATUS.INIT_FAILED, `run ${plan.kvModule}: init failed: ${f.message}`) : fail(f.status, `run ${plan.kvModule}: starting it failed: ${f.message}`);
    }
    controllers.set(plan.controllerId, c);
    ran.created = true;
  }
  if (!c) return fail(STATUS.TRAP, `run ${plan.kvModule}: controller ${plan.controllerId} does not exist in this worker`);
  const slot = c.slot;
  let frame: Frame | undefined;
  try {
    let access: KvAccess = plan.flags & FLAG.KV_WRITE ? 'write' : plan.flags & FLAG.KV_READ ? 'read' : 'none';
    if (plan.checkWriteable) {
      ran.writeable = askWriteable(c, name);
      if (!ran.writeable) access = 'read';
      // over the bridge the main thread lets it write only now (served before its first KV operation)
      if (!(plan.flags & FLAG.KV_LOCAL)) bridge.post(plan.callId, 'runWriteable', [ran.writeable]);
    }
    const parent = caller.frame;
    // writes with no caller's frame to hand them up to would be lost: not allowed (the main thread never plans that)
    if (!parent && access === 'write') access = 'read';
    if (kv && plan.flags & FLAG.KV_LOCAL) {
      // a writer whose lock was taken just now must not read a snapshot from before it (the
      // caller's own reads may then see newer data of scopes it does not lock, as any reader may)
      if (plan.freshRead) kv.refresh();
      const scope = scopeOf(plan.tenant, plan.kvModule);
      const bases = parent?.bases ?? new Map<string, OverlayReader>();
      // a writer that just took its scope's lock reads through the commits still on their way
      if (plan.overlay) for (const [k, v] of plan.overlay) baseOf(bases, kv, scope).layer.set(mapKey(Buffer.from(k.buffer, k.byteOffset, k.byteLength)), v);
      const txn = new KvTxn(viewOf(parent, scope.id, () => baseOf(bases, kv, scope)), scope, access, c.module.kvLimits);
      frame = { scope, txn, pending: new Map(), parent, bases };
    }
    slot.callId = plan.callId;
    slot.txn = frame?.txn;
    slot.frame = frame;
    beginCall(c.module.maxMemoryBytes);
    ran.result = { tag: 'ok', val: c.core ? directInvoke(c.core, name, args) : c.exports.invoke?.(name, args) };
    if (frame && caller.frame) handUp(frame, caller.frame, (s) => baseOf(frame!.bases, kv!, s));
  } catch (e) {
    const f = failureStatus(e, c, c.module.maxMemoryBytes);
    if (f.status === STATUS.GUEST_ERROR) fail(STATUS.GUEST_ERROR, f.message);
    else {
      controllers.delete(plan.controllerId);
      fail(f.status, `run ${plan.kvModule}: ${f.status === STATUS.MEMORY ? 'it ran out of memory' : 'it trapped'}: ${f.message}`);
    }
  } finally {
    ran.didRead = frame?.txn.didRead === true;
    slot.callId = 0;
    slot.txn = undefined;
    slot.frame = undefined;
  }
  return ran;
}

/** function-writeable's answer (its err, or a trap in it, is a no). */
function askWriteable(c: LiveController, name: string | undefined): boolean {
  try {
    return c.exports.functionWriteable?.(name) === true;
  } catch {
    return false;
  }
}

/**
 * A top-level call (or row, or invoke-batch entry) is done: the writes it holds for other
 * scopes go to the main thread to commit with it. Throws when they cannot be handed over:
 * the call must not succeed without them.
 */
function sendNestedCommits(slot: Slot, row: number): void {
  const records = slot.frame ? nestedCommits(slot.frame) : [];
  if (records.length === 0) return;
  const sent = bridge.request(slot.callId, 'runCommits', [row, records]);
  if (sent.tag === 'err') throw new WebAssembly.RuntimeError(`the writes of calls made with run could not be handed over: ${sent.val}`);
}

function scopeOf(tenant: string, module: string): Frame['scope'] {
  const id = `${tenant}\u0000${module}`;
  let s = scopes.get(id);
  if (!s) {
    if (scopes.size >= 4096) scopes.clear();
    s = { ...scopeKeys({ tenant, module }), tenant, module };
    scopes.set(id, s);
  }
  return s;
}

/** Every introspection export in one go; absent exports and guest errs give undefined. */
function describe(c: LiveController) {
  const ask = (fn: string, args: unknown[]) => {
    const f = c.exports[fn];
    if (!f) return undefined;
    try {
      return f(...args);
    } catch (e) {
      if (typeof e === 'string') return undefined;
      throw e;
    }
  };
  const names = (ask('listFunctions', []) as (string | undefined)[] | undefined) ?? [];
  return names.map((name) => ({
    name: name ?? null,
    args: ask('functionArgs', [name]) ?? [],
    returns: ask('functionReturns', [name]) ?? '',
    writeable: ask('functionWriteable', [name]) === true,
    comment: ask('functionComment', [name]) ?? null,
  }));
}

/**
 * Writes a record into the reply ring. `soon`: the main thread needs it only once the
 * call's reply comes (a row's result): it is woken for it only when the ring fills up,
 * not for each one (a wake-up costs the worker 15-25 µs).
 */
function reply(m: ReplyRecord, soon = false): void {
  for (;;) {
    const r = writeReply(replies, m);
    if (r === 'ok') break;
    if (r === 'too-big') {
      const value = m.value instanceof Uint8Array ? m.value : undefined;
      control.postMessage(m, value && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength && !(value.buffer instanceof SharedArrayBuffer) ? [value.buffer] : []);
      while (!writeReplyOnPort(replies, m.seq)) replies.waitForSpace(1);
      break;
    }
    replies.wake(); // the main thread may be asleep with records it was not woken for
    replies.waitForSpace(1); // it reads replies as they come; it frees room soon
  }
  if (replies.publish() && (!soon || replies.used > replies.capacity / 4)) replies.wake();
}

function failureStatus(e: unknown, c: LiveController | undefined, maxMemoryBytes: number): { status: number; message: string } {
  const f = classifyFailure(e, c?.memory, maxMemoryBytes);
  return { status: f.kind === 'guest' ? STATUS.GUEST_ERROR : f.kind === 'memory' ? STATUS.MEMORY : STATUS.TRAP, message: f.message };
}

function runCall(call: CallRecord): ReplyRecord {
  const t0 = now();
  // taken back by the main thread before it started? (the order of these two matters)
  Atomics.store(status, STATUS_LAYOUT.started, call.seq);
  if (call.seq <= Atomics.load(status, STATUS_LAYOUT.withdrawn)) return { seq: call.seq, status: STATUS.WITHDRAWN, flags: 0, ms: 0, memoryBytes: 0, value: undefined, commit: undefined };
  runningSince[STATUS_LAYOUT.since] = t0;
  runningSeq = call.seq;
  Atomics.store(status, STATUS_LAYOUT.running, call.seq);
  beginCall(modules.get(call.moduleId)?.maxMemoryBytes ?? 0);
  const out: ReplyRecord = { seq: call.seq, status: STATUS.OK, flags: 0, ms: 0, memoryBytes: 0, value: undefined, commit: undefined };
  try {
    if (t0 > call.deadlineAt) {
      out.status = STATUS.EXPIRED;
      out.value = 'the deadline passed while the call waited in its worker queue';
      return out;
    }
    let c = controllers.get(call.controllerId);
    if (call.flags & FLAG.CREATE) {
      out.flags |= RFLAG.STARTING;
      Atomics.store(status, STATUS_LAYOUT.row, -1);
      const module = modules.get(call.moduleId);
      try {
        c = instantiate(call.moduleId);
        if (call.flags & FLAG.INIT) c.exports.init?.();
      } catch (e) {
        const f = failureStatus(e, c, module?.maxMemoryBytes ?? 0);
        // an init that returned err(...) is the guest's refusal; anything else while starting is a trap
        out.status = f.status === STATUS.GUEST_ERROR ? STATUS.INIT_FAILED : f.status;
        out.value = f.message;
        out.memoryBytes = memoryBytes(c);
        return out;
      }
      controllers.set(call.controllerId, c);
      out.flags = (out.flags & ~RFLAG.STARTING) | RFLAG.CREATED;
    }
    if (!c) {
      out.status = STATUS.TRAP;
      out.value = `controller ${call.controllerId} does not exist in this worker`;
      return out;
    }
    const slot = c.slot;
    try {
      const access: KvAccess = call.flags & FLAG.KV_WRITE ? 'write' : call.flags & FLAG.KV_READ ? 'read' : 'none';
      if (kv && call.flags & FLAG.KV_LOCAL) {
        kv.refresh();
        // a writer reads through the commits of its scope still on their way into LMDB (and
        // a call that may run others may come to need them laid in for its own scope)
        const reader = call.overlay || c.module.callsRun ? new OverlayReader(kv, call.overlay ?? []) : kv;
        const scope = scopeOf(call.tenant, call.kvModule);
        slot.txn = new KvTxn(reader, scope, access, c.module.kvLimits);
        if (reader instanceof OverlayReader && c.module.callsRun) slot.frame = { scope, txn: slot.txn, pending: new Map(), parent: undefined, bases: new Map([[scope.id, reader]]) };
      }
      slot.callId = call.callId;
      const fn = EXPORTS[call.fn];
      if (call.rows) {
        Atomics.store(status, STATUS_LAYOUT.row, -1);
        if (fn === 'invokeBatch') runBatchEntry(call, c, out);
        else runRows(call, c, out);
        if (out.status !== STATUS.OK && out.status !== STATUS.EXPIRED) controllers.delete(call.controllerId);
        return out;
      }
      if (fn === 'describe') out.value = describe(c);
      else if (fn === 'invoke') out.value = c.core ? directInvoke(c.core, call.name, call.args) : c.exports.invoke?.(call.name, call.args);
      else {
        const f = c.exports[fn as string];
        if (!f) throw new Error(`the module does not export ${fn}`);
        out.value = fn === 'listFunctions' || fn === 'init' ? f() : f(call.name);
      }
      const txn = slot.txn;
      if (txn) {
        if (txn.didRead) out.flags |= RFLAG.KV_READ;
        out.commit = txn.commitRecord();
        sendNestedCommits(slot, -1);
      }
    } catch (e) {
      const f = failureStatus(e, c, c.module.maxMemoryBytes);
      out.status = f.status;
      out.value = f.message;
      if (slot.txn?.didRead) out.flags |= RFLAG.KV_READ;
      // the controller's state is in doubt after anything but the guest's own err: forget it
      if (f.status !== STATUS.GUEST_ERROR) controllers.delete(call.controllerId);
    } finally {
      slot.callId = 0;
      slot.txn = undefined;
      slot.frame = undefined;
    }
    out.memoryBytes = memoryBytes(c);
    return out;
  } finally {
    out.ms = now() - t0;
  }
}

/**
 * Runs `invoke` once per row, back to back on this controller, each row in its own KV
 * transaction (a writer's next row reads through the rows before it, whose writes are not
 * in LMDB yet). Each row has the call's time limit: the row's start is published for the
 * watchdog. Each row's result goes into the reply ring before the next row starts, so a
 * row that is stopped loses none of the rows before it. Stops at a trap (the controller
 * is gone), at the deadline, or when the main thread cancels the rest.
 */
function runRows(call: CallRecord, c: LiveController, out: ReplyRecord): void {
  const rows = call.rows!;
  const slot = c.slot;
  const base = slot.txn;
  slot.txn = undefined;
  // the transaction runCall made tells how this call reads KV; each row gets its own
  const reader = base && base.access === 'write' ? new OverlayReader(base.reader, []) : base?.reader;
  // with run: each row is the top of a call tree of its own; the trees share the scopes' bases
  const topFrame = slot.frame;
  if (topFrame && reader instanceof OverlayReader) topFrame.bases.set(topFrame.scope.id, reader);
  const results: RowResult[] = [];
  out.rows = results;
  /** The scope's entry count after the rows so far, once one of them needed it (counting walks the rows' writes). */
  let entries: number | undefined;
  for (let i = 0; i < rows.length; i++) {
    const t = now();
    if (i > 0) runningSince[STATUS_LAYOUT.since] = t;
    Atomics.store(status, STATUS_LAYOUT.row, i);
    if (t > call.deadlineAt || Atomics.load(status, STATUS_LAYOUT.cancelled) === call.seq) {
      // the main thread says which (it knows its caller's deadline and signal)
      out.status = STATUS.EXPIRED;
      break;
    }
    const txn = base && reader ? new KvTxn(reader, base.scope, base.access, base.limits) : undefined;
    if (txn) txn.baseCount = entries;
    slot.txn = txn;
    const tree = topFrame?.bases;
    if (txn && tree) slot.frame = { scope: topFrame!.scope, txn, pending: new Map(), parent: undefined, bases: tree };
    // each row is a call of its own: its own lift budget
    if (i > 0) beginCall(c.module.maxMemoryBytes);
    try {
      const value = (c.core ? directInvoke(c.core, call.name, rows[i]!) : c.exports.invoke?.(call.name, rows[i])) as Uint8Array;
      const commit = txn?.commitRecord();
      if (slot.frame) sendNestedCommits(slot, i);
      // the next rows read through this one's writes (and its nested calls'), which only the main thread commits
      if (commit && reader instanceof OverlayReader) for (const [k, v] of txn!.buffer) reader.layer.set(k, v);
      if (slot.frame) layPending(slot.frame);
      if (commit) entries = commit.baseCount !== undefined ? commit.baseCount + commit.entryDelta : commit.entryDelta === 0 ? entries : undefined;
      results.push({ status: STATUS.OK, value, commit });
    } catch (e) {
      const f = failureStatus(e, c, c.module.maxMemoryBytes);
      results.push({ status: f.status, value: f.message });
      if (f.status !== STATUS.GUEST_ERROR) {
        out.status = f.status;
        break;
      }
    } finally {
      if (txn?.didRead) out.flags |= RFLAG.KV_READ;
      slot.txn = undefined;
      slot.frame = undefined;
    }
    // any row may be the one that runs past its limit and takes the worker down with it
    if (i + 1 < rows.length && results.length > 0) {
      reply({ seq: call.seq, status: STATUS.ROWS, flags: 0, ms: 0, memoryBytes: 0, value: undefined, commit: undefined, rows: results }, true);
      results.length = 0;
    }
  }
  out.memoryBytes = memoryBytes(c);
}

/**
 * Runs the guest's `invoke-batch` once for all rows, in one KV transaction. Its answer
 * must have one result per row; any other count is a trap for every row.
 */
function runBatchEntry(call: CallRecord, c: LiveController, out: ReplyRecord): void {
  const rows = call.rows!;
  Atomics.store(status, STATUS_LAYOUT.row, 0);
  try {
    const list = c.exports.invokeBatch!(call.name, rows) as unknown;
    if (!Array.isArray(list) || list.length !== rows.length) {
      out.flags |= RFLAG.BAD_COUNT;
      throw new WebAssembly.RuntimeError(`invoke-batch returned ${Array.isArray(list) ? list.length : 'no list of'} results for ${rows.length} rows; it must return one per row`);
    }
    out.rows = list.map((r: { tag: string; val: unknown }) =>
      r.tag === 'ok' ? { status: STATUS.OK, value: r.val as Uint8Array } : { status: STATUS.GUEST_ERROR, value: String(r.val) },
    );
    const txn = c.slot.txn;
    if (txn) {
      if (txn.didRead) out.flags |= RFLAG.KV_READ;
      out.commit = txn.commitRecord();
      sendNestedCommits(c.slot, -1);
    }
  } catch (e) {
    const f = failureStatus(e, c, c.module.maxMemoryBytes);
    // its own err(...) is not a shape invoke-batch can answer with: a trap like any other
    const failed = f.status === STATUS.GUEST_ERROR ? STATUS.TRAP : f.status;
    const message = f.status === STATUS.GUEST_ERROR ? `invoke-batch threw ${f.message}` : f.message;
    out.status = failed;
    out.rows = rows.map(() => ({ status: failed, value: message }));
    if (c.slot.txn?.didRead) out.flags |= RFLAG.KV_READ;
  }
  out.memoryBytes = memoryBytes(c);
}

function loadModule(m: Extract<ControlMessage, { t: 'load' }>): void {
  modules.set(m.moduleId, { glue: m.glue, coreModules: m.coreModules, maxMemoryBytes: m.maxMemoryBytes, kvLimits: m.kvLimits, directInvoke: m.directInvoke, callsRun: m.callsRun });
}

function onControl(m: ControlMessage): void {
  switch (m.t) {
    case 'load':
      loadModule(m);
      return;
    case 'unload':
      modules.delete(m.moduleId);
      return;
    case 'call':
      finish(runCall(m.call));
      return;
    case 'stop':
      stopping = true;
      return;
  }
}

function finish(out: ReplyRecord): void {
  noteHeap();
  reply(out);
  Atomics.store(status, STATUS_LAYOUT.running, 0);
}

/** Handles the request at `at`, then frees it (a call's args are read in place). */
function handle(at: number): void {
  const r = readRequest(requests, at);
  if ('call' in r) finish(runCall(r.call));
  else if (r.kind === REQ.DROP) controllers.delete(r.id);
  else if (r.kind === REQ.CONTROL) {
    const m = receiveMessageOnPort(control);
    if (m) onControl(m.message as ControlMessage);
  }
  requests.consume(at);
}

async function loop(): Promise<void> {
  // spin while calls keep arriving; three spins in a row that find nothing stop the
  // spinning until a call comes soon after the worker fell asleep again
  let spin = SPIN_MAX_US;
  let misses = 0;
  let sliceStart = performance.now();
  while (!stopping) {
    let at = requests.peek();
    if (at < 0 && spin > 0) {
      const until = performance.now() + spin / 1000;
      while ((at = requests.peek()) < 0 && performance.now() < until);
      if (at >= 0) misses = 0;
      else if (++misses >= 3) spin = 0;
    }
    if (at < 0) {
      kv?.refresh(); // hold no read snapshot while idle
      const sleptAt = performance.now();
      // sleep in a futex wait (an Atomics.waitAsync here was seen to miss its notify under load,
      // stranding the calls behind it); every IDLE_WAIT_MS the event loop gets a turn
      requests.waitSync(IDLE_WAIT_MS);
      if (!requests.ready) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      // woken soon after falling asleep (the wake-up itself costs tens of µs): spinning pays again
      if ((performance.now() - sleptAt) * 1000 < 4 * SPIN_MAX_US) {
        spin = SPIN_MAX_US;
        misses = 0;
      }
      sliceStart = performance.now();
      continue;
    }
    handle(at);
    if (performance.now() - sliceStart > SLICE_MS) {
      await new Promise((r) => setImmediate(r));
      sliceStart = performance.now();
    }
  }
  kv?.env.root.close();
  process.exit(0);
}

parentPort?.postMessage({ t: 'ready' });
void loop();
