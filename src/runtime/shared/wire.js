// @ts-check
// The records that cross between the main thread and a runtime worker through its rings:
// a call (everything one invocation needs, in one hand-off) and its reply (the outcome,
// and the call's KV writes for the main thread to commit). Argument and result bytes are
// copied once, into and out of shared memory. A record too big for the ring travels as an
// object over the control port instead, announced by a small record so order is kept.
// Plain JavaScript: both threads load it.

/** Record kinds, main -> worker. */
export const REQ = { CALL: 1, CONTROL: 2, DROP: 3 };
/**
 * Reply status; LOG is not a reply but a guest log line of the running call, ahead of its
 * reply. WITHDRAWN: the main thread took the call back before it started (see STATUS_LAYOUT).
 */
export const STATUS = { OK: 0, GUEST_ERROR: 1, TRAP: 2, MEMORY: 3, INIT_FAILED: 4, EXPIRED: 5, WITHDRAWN: 6, LOG: 254, ON_PORT: 255 };
/**
 * A worker's status block (shared memory, Int32 indexes; `since` is a Float64 index):
 * `running` is the seq of the call running now (0: none), `since` when it started,
 * `started` the last seq the worker began (never reset), `withdrawn` the highest seq the
 * main thread took back. A worker stores `started`, then loads `withdrawn`; the main
 * thread stores `withdrawn`, then loads `started`: whichever comes second sees the other,
 * so a call either runs or comes back WITHDRAWN, never both and never neither.
 */
export const STATUS_LAYOUT = { bytes: 24, running: 0, started: 1, since: 1, withdrawn: 4 };
/** Call flags. */
export const FLAG = { CREATE: 1, INIT: 2, KV_LOCAL: 8, KV_READ: 16, KV_WRITE: 32 };
/** Reply flags. */
export const RFLAG = { KV_READ: 1, CREATED: 8, STARTING: 16 };
/** What a call runs: a plugin export by its jco name, or `describe` (every introspection export in one go). */
export const EXPORTS = ['invoke', 'init', 'listFunctions', 'functionArgs', 'functionReturns', 'functionWriteable', 'functionComment', 'describe'];
const VALUE = { NONE: 0, BYTES: 1, JSON: 2 };

/**
 * @typedef {object} CallRecord
 * @property {number} seq
 * @property {number} controllerId
 * @property {number} moduleId
 * @property {number} callId
 * @property {number} flags
 * @property {number} fn index in EXPORTS
 * @property {number} deadlineAt epoch ms after which the call must not start (Infinity: none)
 * @property {[Buffer, Uint8Array | null][] | undefined} overlay a writer's scope's commits not yet in LMDB (oldest first), to read through
 * @property {string | undefined} name the function name (invoke and introspection)
 * @property {string} tenant KV scope (with FLAG.KV_LOCAL)
 * @property {string} kvModule KV scope (with FLAG.KV_LOCAL)
 * @property {Uint8Array} args
 */
/**
 * @typedef {object} KvCommitRecord
 * @property {[Buffer, Uint8Array | null][]} writes
 * @property {number} entryDelta
 * @property {number | undefined} baseCount
 */
/**
 * @typedef {object} ReplyRecord
 * @property {number} seq
 * @property {number} status
 * @property {number} flags
 * @property {number} ms time the worker spent on the call
 * @property {number} memoryBytes the controller's linear memory after the call
 * @property {unknown} value bytes (invoke), a JSON value (introspection), or the message of a failure
 * @property {KvCommitRecord | undefined} commit
 */

const enc = new TextEncoder();
const dec = new TextDecoder();
/** @param {string | undefined} s */
const strBytes = (s) => (s === undefined ? 0 : Buffer.byteLength(s, 'utf8'));

class Writer {
  /**
   * @param {import('./ring.js').Ring} ring
   * @param {number} at
   */
  constructor(ring, at) {
    this.bytes = ring.bytes;
    this.view = ring.view;
    this.at = at;
  }
  /** @param {number} v */
  u8(v) {
    this.view.setUint8(this.at, v);
    this.at += 1;
  }
  /** @param {number} v */
  u32(v) {
    this.view.setUint32(this.at, v, true);
    this.at += 4;
  }
  /** @param {number} v */
  i32(v) {
    this.view.setInt32(this.at, v, true);
    this.at += 4;
  }
  /** @param {number} v */
  f64(v) {
    this.view.setFloat64(this.at, v, true);
    this.at += 8;
  }
  /** @param {string | undefined} s */
  str(s) {
    if (s === undefined) return this.i32(-1);
    const lenAt = this.at;
    this.at += 4;
    const { written } = enc.encodeInto(s, this.bytes.subarray(this.at));
    this.view.setInt32(lenAt, written, true);
    this.at += written;
  }
  /** @param {Uint8Array | null} b */
  bytesOrNull(b) {
    if (b === null) return this.i32(-1);
    this.i32(b.byteLength);
    this.bytes.set(b, this.at);
    this.at += b.byteLength;
  }
}

class Reader {
  /**
   * @param {import('./ring.js').Ring} ring
   * @param {number} at
   */
  constructor(ring, at) {
    this.bytes = ring.bytes;
    this.view = ring.view;
    this.at = at;
  }
  u8() {
    return this.view.getUint8(this.at++);
  }
  u32() {
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }
  i32() {
    const v = this.view.getInt32(this.at, true);
    this.at += 4;
    return v;
  }
  f64() {
    const v = this.view.getFloat64(this.at, true);
    this.at += 8;
    return v;
  }
  /** @returns {string | undefined} */
  str() {
    const n = this.i32();
    if (n < 0) return undefined;
    const s = dec.decode(this.bytes.subarray(this.at, this.at + n));
    this.at += n;
    return s;
  }
  /**
   * A view into the ring (valid until the record is consumed), or a copy.
   * @param {boolean} copy
   * @returns {Uint8Array | null}
   */
  bytesOrNull(copy) {
    const n = this.i32();
    if (n < 0) return null;
    const view = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return copy ? view.slice() : view;
  }
}

/**
 * KV writes (key, value or null for a deletion), or none (-1).
 * @param {Writer} w
 * @param {[Buffer, Uint8Array | null][] | undefined} entries
 */
function writeEntries(w, entries) {
  if (!entries) return w.i32(-1);
  w.i32(entries.length);
  for (const [k, v] of entries) {
    w.bytesOrNull(k);
    w.bytesOrNull(v);
  }
}

/**
 * @param {Reader} r
 * @returns {[Buffer, Uint8Array | null][] | undefined} copies, safe after the record is consumed
 */
function readEntries(r) {
  const n = r.i32();
  if (n < 0) return undefined;
  /** @type {[Buffer, Uint8Array | null][]} */
  const entries = [];
  for (let i = 0; i < n; i++) {
    const k = /** @type {Uint8Array} */ (r.bytesOrNull(true));
    entries.push([Buffer.from(k.buffer, k.byteOffset, k.byteLength), r.bytesOrNull(true)]);
  }
  return entries;
}

/** @param {CallRecord} c */
function callSize(c) {
  let size = 1 + 4 * 5 + 1 + 8 + 4 * 5 + strBytes(c.name) + strBytes(c.tenant) + strBytes(c.kvModule) + c.args.byteLength;
  if (c.overlay) for (const [k, v] of c.overlay) size += 8 + k.byteLength + (v ? v.byteLength : 0);
  return size;
}

/**
 * Writes a call into the ring: 'full' when it does not fit now (the caller keeps it for
 * later), 'too-big' when it never will (the caller sends it over the control port).
 * @param {import('./ring.js').Ring} ring
 * @param {CallRecord} c
 * @returns {'ok' | 'full' | 'too-big'}
 */
export function writeCall(ring, c) {
  const size = callSize(c);
  if (size > ring.maxRecord) return 'too-big';
  const at = ring.reserve(size);
  if (at < 0) return 'full';
  const w = new Writer(ring, at);
  w.u8(REQ.CALL);
  w.u32(c.seq);
  w.u32(c.controllerId);
  w.u32(c.moduleId);
  w.u32(c.callId);
  w.u32(c.flags);
  w.u8(c.fn);
  w.f64(c.deadlineAt);
  w.str(c.name);
  w.str(c.tenant);
  w.str(c.kvModule);
  w.bytesOrNull(c.args);
  writeEntries(w, c.overlay);
  return 'ok';
}

/**
 * A record with no body but its kind (CONTROL) or one id (DROP).
 * @param {import('./ring.js').Ring} ring
 * @param {number} kind
 * @param {number} id
 */
export function writeSmall(ring, kind, id) {
  const at = ring.reserve(5);
  if (at < 0) return false;
  const w = new Writer(ring, at);
  w.u8(kind);
  w.u32(id);
  return true;
}

/**
 * Reads the request at `at` (a payload offset from `ring.peek()`). A call's args are a view
 * into the ring: use them before `ring.consume(at)`.
 * @param {import('./ring.js').Ring} ring
 * @param {number} at
 * @returns {{ kind: 1, call: CallRecord } | { kind: 2 | 3, id: number }}
 */
export function readRequest(ring, at) {
  const r = new Reader(ring, at);
  const kind = r.u8();
  if (kind !== REQ.CALL) return { kind: /** @type {2 | 3} */ (kind), id: r.u32() };
  const call = {
    seq: r.u32(),
    controllerId: r.u32(),
    moduleId: r.u32(),
    callId: r.u32(),
    flags: r.u32(),
    fn: r.u8(),
    deadlineAt: r.f64(),
    name: r.str(),
    tenant: /** @type {string} */ (r.str()),
    kvModule: /** @type {string} */ (r.str()),
    args: /** @type {Uint8Array} */ (r.bytesOrNull(false)),
    overlay: readEntries(r),
  };
  return { kind: 1, call };
}

/** @param {ReplyRecord} m */
function valueOf(m) {
  if (m.value instanceof Uint8Array) return { kind: VALUE.BYTES, bytes: m.value };
  if (m.value === undefined) return { kind: VALUE.NONE, bytes: new Uint8Array(0) };
  return { kind: VALUE.JSON, bytes: enc.encode(JSON.stringify(m.value)) };
}

/**
 * Writes a reply; 'too-big' when it must go over the port, 'full' when the ring has no room now.
 * @param {import('./ring.js').Ring} ring
 * @param {ReplyRecord} m
 * @returns {'ok' | 'full' | 'too-big'}
 */
export function writeReply(ring, m) {
  const v = valueOf(m);
  let size = 4 + 1 + 1 + 8 + 8 + 1 + 4 + v.bytes.byteLength + 4;
  if (m.commit) {
    size += 16;
    for (const [k, val] of m.commit.writes) size += 8 + k.byteLength + (val ? val.byteLength : 0);
  }
  if (size > ring.maxRecord) return 'too-big';
  const at = ring.reserve(size);
  if (at < 0) return 'full';
  const w = new Writer(ring, at);
  w.u32(m.seq);
  w.u8(m.status);
  w.u8(m.flags);
  w.f64(m.ms);
  w.f64(m.memoryBytes);
  w.u8(v.kind);
  w.bytesOrNull(v.bytes);
  writeEntries(w, m.commit?.writes);
  if (!m.commit) return 'ok';
  w.f64(m.commit.entryDelta);
  w.f64(m.commit.baseCount ?? NaN);
  return 'ok';
}

/**
 * Writes the small record that says "this reply is on the port".
 * @param {import('./ring.js').Ring} ring
 * @param {number} seq
 */
export function writeReplyOnPort(ring, seq) {
  const at = ring.reserve(5);
  if (at < 0) return false;
  const w = new Writer(ring, at);
  w.u32(seq);
  w.u8(STATUS.ON_PORT);
  return true;
}

/**
 * Reads (and copies out) the reply at `at`.
 * @param {import('./ring.js').Ring} ring
 * @param {number} at
 * @returns {ReplyRecord}
 */
export function readReply(ring, at) {
  const r = new Reader(ring, at);
  const seq = r.u32();
  const status = r.u8();
  if (status === STATUS.ON_PORT) return { seq, status, flags: 0, ms: 0, memoryBytes: 0, value: undefined, commit: undefined };
  const flags = r.u8();
  const ms = r.f64();
  const memoryBytes = r.f64();
  const kind = r.u8();
  const bytes = /** @type {Uint8Array} */ (r.bytesOrNull(kind === VALUE.BYTES));
  /** @type {unknown} */
  let value;
  if (kind === VALUE.BYTES) value = bytes;
  else if (kind === VALUE.JSON) value = JSON.parse(dec.decode(bytes));
  /** @type {KvCommitRecord | undefined} */
  let commit;
  const writes = readEntries(r);
  if (writes) {
    const entryDelta = r.f64();
    const base = r.f64();
    commit = { writes, entryDelta, baseCount: Number.isNaN(base) ? undefined : base };
  }
  return { seq, status, flags, ms, memoryBytes, value, commit };
}
