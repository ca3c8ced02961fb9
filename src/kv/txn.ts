// One invocation's KV transaction: every `kv-*` host import, its limits and permission,
// over a buffer of its own writes laid on a reader of committed data. Synchronous: the
// same code serves a worker reading LMDB directly and the main thread's bridge. Nothing
// is visible to others until the owner commits `writes()`; dropping it is a rollback.
// Workers load it.
import { KvOpError } from './kv-error.js';
import { decodeKey, encodeKey, fromMapKey, mapKey, type ScopeKeys } from './keys.js';
import { laid, type Layer } from './layer.js';
import type { KvAccess, KvLimits } from './types.js';

/** Committed data, as a transaction reads it. */
export interface KvReader {
  get(key: Buffer): Uint8Array | undefined;
  /** Entries with lo <= key < hi, in key order (or reverse). */
  range(lo: Buffer, hi: Buffer, reverse: boolean): Iterable<[Buffer, Uint8Array]>;
  /** Committed entries in the scope. */
  count(scope: ScopeKeys): number;
}

/** A range argument of a guest's KV call, checked and encoded. */
interface KeyRange {
  lo: Buffer;
  hi: Buffer;
  reverse: boolean;
  limit: number | undefined;
}

export const KV_OPS = ['kvGet', 'kvSet', 'kvDel', 'kvExists', 'kvGetBatch', 'kvSetBatch', 'kvDelBatch', 'kvDelRange', 'kvKeys', 'kvEntries', 'kvCount'];
export const KV_WRITE_OPS = new Set(['kvSet', 'kvDel', 'kvSetBatch', 'kvDelBatch', 'kvDelRange']);
/** The same write operations by their WIT names, as a component imports them. */
export const KV_WRITE_IMPORTS = ['kv-set', 'kv-del', 'kv-set-batch', 'kv-del-batch', 'kv-del-range'];

/** The err a batch of more than maxBatchItems items gets (also before its list is lifted, see runtime/worker/guards.ts). */
export const batchTooBig = (items: number, maxBatchItems: number) => `batch of ${items} items exceeds the batch limit (maxBatchItems = ${maxBatchItems})`;

/** Refuses an operation the call's KV access does not allow (the same words for every store). */
export function checkAccess(op: string, access: KvAccess): void {
  if (access === 'none') throw new KvOpError(`${op}: KV access denied: the caller has no KV permission`);
  if (KV_WRITE_OPS.has(op) && access !== 'write') {
    throw new KvOpError(writeDenied(op));
  }
}

/** A value argument, checked against maxValueBytes and copied (jco may hand a view into guest memory). */
export function checkValue(v: unknown, limits: KvLimits): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new KvOpError('value must be bytes');
  if (v.byteLength > limits.maxValueBytes) {
    throw new KvOpError(`value of ${v.byteLength} bytes exceeds the value size limit (maxValueBytes = ${limits.maxValueBytes})`);
  }
  return new Uint8Array(v);
}

/** A batch argument, checked against maxBatchItems. */
export function checkBatch(items: unknown, limits: KvLimits): unknown[] {
  if (!Array.isArray(items)) throw new KvOpError('batch must be a list');
  if (items.length > limits.maxBatchItems) throw new KvOpError(batchTooBig(items.length, limits.maxBatchItems));
  return items;
}

export const entryLimitReached = (limits: KvLimits) => new KvOpError(`the write would take this scope past its entry limit (maxEntriesPerScope = ${limits.maxEntriesPerScope})`);
export const rangeTooBig = (op: string, max: number) => new KvOpError(`${op}: the range holds more than ${max} entries (maxRangeEntries = ${max}); pass a limit`);

/** The err a write gets from a call with read-only KV. */
export const writeDenied = (op: string) => `${op}: KV write denied: this call has read-only KV (the caller's permission, or the function is not writeable)`;

export class KvTxn {
  buffer: Layer = new Map();
  /** Change in the scope's entry count that the buffer would make. */
  entryDelta = 0;
  /** The scope's committed entry count, once something needed it. */
  baseCount: number | undefined;
  /** Something was read from committed data (the answer may then wait for its durability). */
  didRead = false;

  constructor(
    readonly reader: KvReader,
    readonly scope: ScopeKeys,
    readonly access: KvAccess,
    readonly limits: KvLimits,
  ) {}

  /** Runs one host import by its jco name. Throws KvOpError for a guest-visible err. */
  apply(op: string, args: unknown[]): unknown {
    checkAccess(op, this.access);
    switch (op) {
      case 'kvGet':
        return this.get(this.key(args[0]));
      case 'kvExists':
        return this.get(this.key(args[0])) !== undefined;
      case 'kvSet':
        this.setAll([[this.key(args[0]), this.value(args[1])]]);
        return undefined;
      case 'kvDel':
        this.setAll([[this.key(args[0]), null]]);
        return undefined;
      case 'kvGetBatch':
        return this.batch(args[0]).map((k) => this.get(this.key(k)));
      case 'kvSetBatch':
        this.setAll(
          this.batch(args[0]).map((e) => {
            if (!Array.isArray(e) || e.length !== 2) throw new KvOpError('kvSetBatch: each entry must be a (key, value) pair');
            return [this.key(e[0]), this.value(e[1])] as const;
          }),
        );
        return undefined;
      case 'kvDelBatch':
        this.setAll(this.batch(args[0]).map((k) => [this.key(k), null] as const));
        return undefined;
      case 'kvKeys':
        return this.range(args[0], 'kvKeys').map(([k]) => decodeKey(this.scope, k));
      case 'kvEntries':
        return this.range(args[0], 'kvEntries').map(([k, v]) => [decodeKey(this.scope, k), v]);
      case 'kvCount': {
        const r = this.rangeOf(args[0]);
        let n = 0;
        if (r.limit !== 0) for (const _ of this.scan(r)) if (++n === r.limit) break;
        return BigInt(n);
      }
      case 'kvDelRange': {
        const doomed = this.range(args[0], 'kvDelRange');
        this.setAll(doomed.map(([k]) => [k, null] as const));
        return BigInt(doomed.length);
      }
      default:
        throw new KvOpError(`${op} is not a KV operation`);
    }
  }

  /**
   * What the store must commit (the writes, and what they do to the scope's entry count),
   * or undefined when the call wrote nothing.
   */
  commitRecord(): { writes: [Buffer, Uint8Array | null][]; entryDelta: number; baseCount: number | undefined } | undefined {
    if (this.buffer.size === 0) return undefined;
    const writes = [...this.buffer].map(([k, v]): [Buffer, Uint8Array | null] => [fromMapKey(k), v]);
    return { writes, entryDelta: this.entryDelta, baseCount: this.baseCount };
  }

  key(k: unknown): Buffer {
    return encodeKey(this.scope, k, this.limits.maxKeyBytes);
  }

  value(v: unknown): Uint8Array {
    return checkValue(v, this.limits);
  }

  batch(items: unknown): unknown[] {
    return checkBatch(items, this.limits);
  }

  get(key: Buffer): Uint8Array | undefined {
    const own = this.buffer.get(mapKey(key));
    if (own !== undefined) return own ?? undefined;
    this.didRead = true;
    return this.reader.get(key);
  }

  /** All or nothing: the entry limit is checked for the whole group before any is buffered. */
  setAll(entries: readonly (readonly [Buffer, Uint8Array | null])[]): void {
    let delta = this.entryDelta;
    const seen = new Map<string, boolean>();
    for (const [key, value] of entries) {
      const k = mapKey(key);
      const existsNow = seen.get(k) ?? this.get(key) !== undefined;
      delta += (value ? 1 : 0) - (existsNow ? 1 : 0);
      seen.set(k, value !== null);
    }
    if (delta > 0) {
      this.baseCount ??= this.reader.count(this.scope);
      if (this.baseCount + delta > this.limits.maxEntriesPerScope) {
        throw entryLimitReached(this.limits);
      }
    }
    for (const [key, value] of entries) this.buffer.set(mapKey(key), value);
    this.entryDelta = delta;
  }

  rangeOf(r: unknown): KeyRange {
    if (typeof r !== 'object' || r === null) throw new KvOpError('range must be a key-range record');
    const { start, end, limit, reverse } = r as { start?: string; end?: string; limit?: number; reverse?: boolean };
    return {
      lo: start === undefined ? this.scope.prefix : this.key(start),
      hi: end === undefined ? this.scope.above : this.key(end),
      reverse: reverse === true,
      limit: limit === undefined ? undefined : limit,
    };
  }

  /** Committed entries of a range with this transaction's buffer laid over them. Lazy. */
  scan(r: { lo: Buffer; hi: Buffer; reverse: boolean }): Generator<[Buffer, Uint8Array]> {
    this.didRead = true;
    return laid(this.buffer, this.reader.range(r.lo, r.hi, r.reverse), r.lo, r.hi, r.reverse);
  }

  /** Entries of a range, refusing (with nothing done) a result past maxRangeEntries. */
  range(r: unknown, op: string): [Buffer, Uint8Array][] {
    const range = this.rangeOf(r);
    const max = this.limits.maxRangeEntries;
    const want = range.limit === undefined ? max + 1 : Math.min(range.limit, max + 1);
    const out: [Buffer, Uint8Array][] = [];
    if (want > 0) for (const e of this.scan(range)) if (out.push(e) >= want) break;
    if (out.length > max) {
      throw rangeTooBig(op, max);
    }
    return out;
  }
}
