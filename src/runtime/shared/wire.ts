// The records that cross between the main thread and a runtime worker through its rings:
// a call (everything one invocation needs, in one hand-off) and its reply (the outcome,
// and the call's KV writes for the main thread to commit). Argument and result bytes are
// copied once, into and out of shared memory. A record too big for the ring travels as an
// object over the control port instead, announced by a small record so order is kept.
// Both threads load it.
import type { Ring } from './ring.js';

/** Record kinds, main -> worker. */
export const REQ = { CALL: 1, CONTROL: 2, DROP: 3 };
/**
 * Reply status; LOG is not a reply but a guest log line of the running call, ahead of its
 * reply; ROWS is not a reply either but the results of rows the running call has finished
 * so far (a call with rows sends them as it goes, so a timeout in row k loses none before
 * it). WITHDRAWN: the main thread took the call back before it started (see STATUS_LAYOUT).
 * A call with rows that stops early replies with the status of why: TRAP or MEMORY (its
 * last row is the one that failed), or EXPIRED (deadline passed or cancelled: the rest
 * did not run).
 */
export const STATUS = { OK: 0, GUEST_ERROR: 1, TRAP: 2, MEMORY: 3, INIT_FAILED: 4, EXPIRED: 5, WITHDRAWN: 6, ROWS: 253, LOG: 254, ON_PORT: 255 };
/**
 * A worker's status block (shared memory, Int32 indexes; `since` is a Float64 index):
 * `running` is the seq of the call running now (0: none), `since` when it started,
 * `started` the last seq the worker began (never reset), `withdrawn` the highest seq the
 * main thread took back. A worker stores `started`, then loads `withdrawn`; the main
 * thread stores `withdrawn`, then loads `started`: whichever comes second sees the other,
 * so a call either runs or comes back WITHDRAWN, never both and never neither. For a call
 * with rows, `since` is when its current row started (each row has the time limit), `row`
 * that row's index (-1 until its first row starts), and `cancelled` the seq of the call
 * whose remaining rows the main thread last asked the worker not to start.
 */
export const STATUS_LAYOUT = { bytes: 32, running: 0, started: 1, since: 1, withdrawn: 4, row: 5, cancelled: 6 };
/** Call flags. */
export const FLAG = { CREATE: 1, INIT: 2, KV_LOCAL: 8, KV_READ: 16, KV_WRITE: 32 };
/** Reply flags. BAD_COUNT: invoke-batch answered another number of results than rows. */
export const RFLAG = { KV_READ: 1, CREATED: 8, STARTING: 16, BAD_COUNT: 32 };
/** What a call runs: a plugin export by its jco name, or `describe` (every introspection export in one go). */
export const EXPORTS = ['invoke', 'init', 'listFunctions', 'functionArgs', 'functionReturns', 'functionWriteable', 'functionComment', 'describe', 'invokeBatch'];
const VALUE = { NONE: 0, BYTES: 1, JSON: 2, ROWS: 3 };

/** The result of one row of a call with rows: its status, its value or failure message, its KV writes. */
export interface RowResult {
  status: number;
  value: Uint8Array | string | undefined;
  commit?: KvCommitRecord | undefined;
}

export interface CallRecord {
  seq: number;
  controllerId: number;
  moduleId: number;
  callId: number;
  flags: number;
  /** Index in EXPORTS. */
  fn: number;
  /** Epoch ms after which the call must not start (Infinity: none). */
  deadlineAt: number;
  /** A writer's scope's commits not yet in LMDB (oldest first), to read through. */
  overlay: [Buffer, Uint8Array | null][] | undefined;
  /** The function name (invoke and introspection). */
  name: string | undefined;
  /** KV scope (with FLAG.KV_LOCAL). */
  tenant: string;
  /** KV scope (with FLAG.KV_LOCAL). */
  kvModule: string;
  args: Uint8Array;
  /** A call with rows: `fn` runs once per row (invoke), or once for all (invokeBatch). */
  rows?: readonly Uint8Array[] | undefined;
}

export interface KvCommitRecord {
  writes: [Buffer, Uint8Array | null][];
  entryDelta: number;
  baseCount: number | undefined;
}

export interface ReplyRecord {
  seq: number;
  status: number;
  flags: number;
  /** Time the worker spent on the call. */
  ms: number;
  /** The controller's linear memory after the call. */
  memoryBytes: number;
  /** Bytes (invoke), a JSON value (introspection), RowResult[] (a call with rows), or the message of a failure. */
  value: unknown;
  commit: KvCommitRecord | undefined;
  /** A call with rows: the results of the rows it ran (all, or up to the one it stopped at). */
  rows?: RowResult[] | undefined;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const strBytes = (s: string | undefined) => (s === undefined ? 0 : Buffer.byteLength(s, 'utf8'));

/** A position in a ring's bytes, for writing or reading one record. */
class Cursor {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  constructor(
    /** A ring's bytes, or a copy of a record's. */
    over: Pick<Ring, 'bytes' | 'view'>,
    public at: number,
  ) {
    this.bytes = over.bytes;
    this.view = over.view;
  }
}

class Writer extends Cursor {
  u8(v: number): void {
    this.view.setUint8(this.at, v);
    this.at += 1;
  }
  u32(v: number): void {
    this.view.setUint32(this.at, v, true);
    this.at += 4;
  }
  i32(v: number): void {
    this.view.setInt32(this.at, v, true);
    this.at += 4;
  }
  f64(v: number): void {
    this.view.setFloat64(this.at, v, true);
    this.at += 8;
  }
  str(s: string | undefined): void {
    if (s === undefined) return this.i32(-1);
    const lenAt = this.at;
    this.at += 4;
    const { written } = enc.encodeInto(s, this.bytes.subarray(this.at));
    this.view.setInt32(lenAt, written, true);
    this.at += written;
  }
  bytesOrNull(b: Uint8Array | null): void {
    if (b === null) return this.i32(-1);
    this.i32(b.byteLength);
    this.bytes.set(b, this.at);
    this.at += b.byteLength;
  }
}

class Reader extends Cursor {
  u8(): number {
    return this.view.getUint8(this.at++);
  }
  u32(): number {
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }
  i32(): number {
    const v = this.view.getInt32(this.at, true);
    this.at += 4;
    return v;
  }
  f64(): number {
    const v = this.view.getFloat64(this.at, true);
    this.at += 8;
    return v;
  }
  str(): string | undefined {
    const n = this.i32();
    if (n < 0) return undefined;
    const s = dec.decode(this.bytes.subarray(this.at, this.at + n));
    this.at += n;
    return s;
  }
  /** A view into the ring (valid until the record is consumed), or a copy. */
  bytesOrNull(copy: boolean): Uint8Array | null {
    const n = this.i32();
    if (n < 0) return null;
    const view = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return copy ? copyOut(view) : view;
  }
}

/** Copies of small values share 64 KiB chunks: an ArrayBuffer each cost more than the copy (a row's result, a KV key). */
const CHUNK = 64 * 1024;
const SMALL = 1024;
let chunk = new Uint8Array(CHUNK);
let chunkAt = 0;

/** A copy of `view` that outlives its record. */
function copyOut(view: Uint8Array): Uint8Array {
  const n = view.byteLength;
  if (n > SMALL) return view.slice();
  if (chunkAt + n > CHUNK) {
    chunk = new Uint8Array(CHUNK);
    chunkAt = 0;
  }
  const out = chunk.subarray(chunkAt, chunkAt + n);
  out.set(view);
  // keep each copy 8-byte aligned, as a fresh buffer's would be
  chunkAt += (n + 7) & ~7;
  return out;
}

/** Bytes writeEntries takes for `entries` beyond its count: a length per key and value, and their bytes. */
function entriesSize(entries: [Buffer, Uint8Array | null][] | undefined): number {
  let size = 0;
  if (entries) for (const [k, v] of entries) size += 8 + k.byteLength + (v ? v.byteLength : 0);
  return size;
}

/** KV writes (key, value or null for a deletion), or none (-1). */
function writeEntries(w: Writer, entries: [Buffer, Uint8Array | null][] | undefined): void {
  if (!entries) return w.i32(-1);
  w.i32(entries.length);
  for (const [k, v] of entries) {
    w.bytesOrNull(k);
    w.bytesOrNull(v);
  }
}

/** Copies, safe after the record is consumed. */
function readEntries(r: Reader): [Buffer, Uint8Array | null][] | undefined {
  const n = r.i32();
  if (n < 0) return undefined;
  const entries: [Buffer, Uint8Array | null][] = [];
  for (let i = 0; i < n; i++) {
    const k = r.bytesOrNull(true) as Uint8Array;
    entries.push([Buffer.from(k.buffer, k.byteOffset, k.byteLength), r.bytesOrNull(true)]);
  }
  return entries;
}

function callSize(c: CallRecord): number {
  let size = 1 + 4 * 5 + 1 + 8 + 4 * 5 + strBytes(c.name) + strBytes(c.tenant) + strBytes(c.kvModule) + c.args.byteLength;
  size += entriesSize(c.overlay) + 4;
  if (c.rows) for (const r of c.rows) size += 4 + r.byteLength;
  return size;
}

/** A writer over `size` bytes reserved in the ring; 'too-big' when a record that big never fits, 'full' when it does not now. */
function reserveRecord(ring: Ring, size: number): Writer | 'full' | 'too-big' {
  if (size > ring.maxRecord) return 'too-big';
  const at = ring.reserve(size);
  return at < 0 ? 'full' : new Writer(ring, at);
}

/**
 * Writes a call into the ring: 'full' when it does not fit now (the caller keeps it for
 * later), 'too-big' when it never will (the caller sends it over the control port).
 */
export function writeCall(ring: Ring, c: CallRecord): 'ok' | 'full' | 'too-big' {
  const w = reserveRecord(ring, callSize(c));
  if (typeof w === 'string') return w;
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
  if (!c.rows) w.i32(-1);
  else {
    w.i32(c.rows.length);
    for (const r of c.rows) w.bytesOrNull(r);
  }
  return 'ok';
}

/** A record with no body but its kind (CONTROL) or one id (DROP). */
export function writeSmall(ring: Ring, kind: number, id: number): boolean {
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
 */
export function readRequest(ring: Ring, at: number): { kind: 1; call: CallRecord } | { kind: 2 | 3; id: number } {
  const r = new Reader(ring, at);
  const kind = r.u8();
  if (kind !== REQ.CALL) return { kind: kind as 2 | 3, id: r.u32() };
  const call: CallRecord = {
    seq: r.u32(),
    controllerId: r.u32(),
    moduleId: r.u32(),
    callId: r.u32(),
    flags: r.u32(),
    fn: r.u8(),
    deadlineAt: r.f64(),
    name: r.str(),
    tenant: r.str() as string,
    kvModule: r.str() as string,
    args: r.bytesOrNull(false) as Uint8Array,
    overlay: readEntries(r),
  };
  const rows = r.i32();
  if (rows >= 0) {
    const views = new Array<Uint8Array>(rows);
    for (let i = 0; i < rows; i++) views[i] = r.bytesOrNull(false) as Uint8Array;
    call.rows = views;
  }
  return { kind: 1, call };
}

function valueOf(m: ReplyRecord): { kind: number; bytes: Uint8Array } {
  if (m.rows) return { kind: VALUE.ROWS, bytes: EMPTY };
  if (m.value instanceof Uint8Array) return { kind: VALUE.BYTES, bytes: m.value };
  if (m.value === undefined) return { kind: VALUE.NONE, bytes: EMPTY };
  return { kind: VALUE.JSON, bytes: enc.encode(JSON.stringify(m.value)) };
}

const EMPTY = new Uint8Array(0);

/** Row results as written: each failure message encoded once, up front, for the size. */
function encodeRows(rows: readonly RowResult[]): { rows: readonly RowResult[]; size: number } {
  let size = 4;
  const out = rows.map((r) => {
    const value = typeof r.value === 'string' ? enc.encode(r.value) : r.value;
    size += 1 + 1 + 4 + (value ? value.byteLength : 0) + 4;
    if (r.commit) size += 16 + entriesSize(r.commit.writes);
    return { status: r.status, value, commit: r.commit, text: typeof r.value === 'string' };
  });
  return { rows: out, size };
}

function writeCommit(w: Writer, c: KvCommitRecord | undefined): void {
  writeEntries(w, c?.writes);
  if (!c) return;
  w.f64(c.entryDelta);
  w.f64(c.baseCount ?? NaN);
}

function readCommit(r: Reader): KvCommitRecord | undefined {
  const writes = readEntries(r);
  if (!writes) return undefined;
  const entryDelta = r.f64();
  const base = r.f64();
  return { writes, entryDelta, baseCount: Number.isNaN(base) ? undefined : base };
}

/** Writes a reply; 'too-big' when it must go over the port, 'full' when the ring has no room now. */
export function writeReply(ring: Ring, m: ReplyRecord): 'ok' | 'full' | 'too-big' {
  const v = valueOf(m);
  const rows = m.rows ? encodeRows(m.rows) : undefined;
  let size = 4 + 1 + 1 + 8 + 8 + 1 + 4 + v.bytes.byteLength + 4 + (rows ? rows.size : 0);
  if (m.commit) size += 16 + entriesSize(m.commit.writes);
  const w = reserveRecord(ring, size);
  if (typeof w === 'string') return w;
  w.u32(m.seq);
  w.u8(m.status);
  w.u8(m.flags);
  w.f64(m.ms);
  w.f64(m.memoryBytes);
  w.u8(v.kind);
  w.bytesOrNull(v.bytes);
  writeCommit(w, m.commit);
  if (rows) {
    w.i32(rows.rows.length);
    for (const r of rows.rows as (RowResult & { text: boolean })[]) {
      w.u8(r.status);
      w.u8(r.text ? 1 : 0);
      w.bytesOrNull((r.value as Uint8Array | undefined) ?? null);
      writeCommit(w, r.commit);
    }
  }
  return 'ok';
}

/** Writes the small record that says "this reply is on the port". */
export function writeReplyOnPort(ring: Ring, seq: number): boolean {
  const at = ring.reserve(5);
  if (at < 0) return false;
  const w = new Writer(ring, at);
  w.u32(seq);
  w.u8(STATUS.ON_PORT);
  return true;
}

/** Reads (and copies out) the reply at `at`. */
export function readReply(ring: Ring, at: number): ReplyRecord {
  const r = new Reader(ring, at);
  const seq = r.u32();
  const status = r.u8();
  if (status === STATUS.ON_PORT) return { seq, status, flags: 0, ms: 0, memoryBytes: 0, value: undefined, commit: undefined };
  const flags = r.u8();
  const ms = r.f64();
  const memoryBytes = r.f64();
  const kind = r.u8();
  const bytes = r.bytesOrNull(kind === VALUE.BYTES) as Uint8Array;
  let value: unknown;
  if (kind === VALUE.BYTES) value = bytes;
  else if (kind === VALUE.JSON) value = JSON.parse(dec.decode(bytes));
  const commit = readCommit(r);
  if (kind !== VALUE.ROWS) return { seq, status, flags, ms, memoryBytes, value, commit };
  const count = r.view.getInt32(r.at, true);
  // many rows: their bytes copied out in one piece, each row's value a view of it; a few
  // (a row sent as it finishes): each copied, which allocates less
  const one = count > 8;
  const copy = one ? ring.bytes.slice(r.at, at + ring.length(at)) : undefined;
  const rr = copy ? new Reader({ bytes: copy, view: new DataView(copy.buffer) }, 0) : r;
  rr.i32();
  const rows = new Array<RowResult>(count);
  for (let i = 0; i < count; i++) {
    const rowStatus = rr.u8();
    const text = rr.u8() === 1;
    const b = rr.bytesOrNull(!one && !text);
    rows[i] = { status: rowStatus, value: b === null ? undefined : text ? dec.decode(b) : b, commit: readCommit(rr) };
  }
  return { seq, status, flags, ms, memoryBytes, value: undefined, rows, commit };
}
