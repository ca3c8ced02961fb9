// One invocation's KV transaction: every `kv-*` host import, its limits and permission,
// over a buffer of its own writes. Nothing is visible to others until commit; a
// rollback (guest err, trap, timeout) leaves the store exactly as it was.
import { decodeKey, encodeKey, mapKey, type ScopeKeys } from './keys.js';
import type { Layer, LmdbKvStore, Range } from './lmdb-store.js';
import { KvOpError, type KvAccess, type KvLimits } from './types.js';

interface KeyRange {
  start?: string;
  end?: string;
  limit?: number;
  reverse?: boolean;
}

const WRITES = new Set(['kvSet', 'kvDel', 'kvSetBatch', 'kvDelBatch', 'kvDelRange']);

export class LmdbTransaction {
  private readonly buffer: Layer = new Map();
  /** Change in the scope's entry count that the buffer would make. */
  private entryDelta = 0;
  private release: (() => void) | undefined;
  private locking: Promise<void> | undefined;
  private state: 'open' | 'committed' | 'rolled-back' = 'open';

  constructor(
    private readonly store: LmdbKvStore,
    private readonly scope: ScopeKeys,
    private readonly access: KvAccess,
    private readonly limits: KvLimits,
  ) {}

  async apply(op: string, args: unknown[]): Promise<unknown> {
    if (this.state !== 'open') throw new KvOpError(`${op}: the call's transaction is already finished`);
    if (WRITES.has(op) && this.access !== 'write') {
      throw new KvOpError(`${op}: KV write denied: this call has read-only KV (the caller's permission, or the function is not writeable)`);
    }
    // a call that may write holds its scope's lock from its first operation: its reads stay valid until it commits
    if (this.access === 'write') await this.lock();
    switch (op) {
      case 'kvGet':
        return this.get(this.key(args[0]));
      case 'kvExists':
        return this.get(this.key(args[0])) !== undefined;
      case 'kvSet':
        this.set(this.key(args[0]), this.value(args[1]));
        return undefined;
      case 'kvDel':
        this.set(this.key(args[0]), null);
        return undefined;
      case 'kvGetBatch':
        return this.batch(args[0]).map((k) => this.get(this.key(k)));
      case 'kvSetBatch': {
        const entries = this.batch(args[0]).map((e) => {
          if (!Array.isArray(e) || e.length !== 2) throw new KvOpError('kvSetBatch: each entry must be a (key, value) pair');
          return [this.key(e[0]), this.value(e[1])] as const;
        });
        this.setAll(entries);
        return undefined;
      }
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
        if (r.limit !== 0) for (const _ of this.store.scan(this.scope, r.range, this.buffer)) if (++n === r.limit) break;
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

  private lock(): Promise<void> {
    this.locking ??= this.store.locks.acquire(this.scope.id, this.store.lockTimeoutMs).then((release) => {
      if (this.state === 'open') this.release = release;
      else release(); // the call ended while it waited
    });
    return this.locking;
  }

  private key(k: unknown): Buffer {
    return encodeKey(this.scope, k, this.limits.maxKeyBytes);
  }

  private value(v: unknown): Uint8Array {
    if (!(v instanceof Uint8Array)) throw new KvOpError('value must be bytes');
    if (v.byteLength > this.limits.maxValueBytes) {
      throw new KvOpError(`value of ${v.byteLength} bytes exceeds the value size limit (maxValueBytes = ${this.limits.maxValueBytes})`);
    }
    return v;
  }

  private batch(items: unknown): unknown[] {
    if (!Array.isArray(items)) throw new KvOpError('batch must be a list');
    if (items.length > this.limits.maxBatchItems) {
      throw new KvOpError(`batch of ${items.length} items exceeds the batch limit (maxBatchItems = ${this.limits.maxBatchItems})`);
    }
    return items;
  }

  private get(key: Buffer): Uint8Array | undefined {
    const own = this.buffer.get(mapKey(key));
    if (own !== undefined) return own ?? undefined;
    return this.store.read(key);
  }

  private set(key: Buffer, value: Uint8Array | null): void {
    this.setAll([[key, value]]);
  }

  /** All or nothing: the entry limit is checked for the whole group before any is buffered. */
  private setAll(entries: readonly (readonly [Buffer, Uint8Array | null])[]): void {
    let delta = this.entryDelta;
    const seen = new Map<string, boolean>();
    for (const [key, value] of entries) {
      const k = mapKey(key);
      const existsNow = seen.get(k) ?? this.get(key) !== undefined;
      delta += (value ? 1 : 0) - (existsNow ? 1 : 0);
      seen.set(k, value !== null);
    }
    if (delta > 0 && this.store.entryCount(this.scope) + delta > this.limits.maxEntriesPerScope) {
      throw new KvOpError(`the write would take this scope past its entry limit (maxEntriesPerScope = ${this.limits.maxEntriesPerScope})`);
    }
    for (const [key, value] of entries) this.buffer.set(mapKey(key), value);
    this.entryDelta = delta;
  }

  private rangeOf(r: unknown): { range: Range; limit: number | undefined } {
    if (typeof r !== 'object' || r === null) throw new KvOpError('range must be a key-range record');
    const { start, end, limit, reverse } = r as KeyRange;
    return {
      range: {
        lo: start === undefined ? undefined : this.key(start),
        hi: end === undefined ? undefined : this.key(end),
        reverse: reverse === true,
      },
      limit: limit === undefined ? undefined : limit,
    };
  }

  /** Entries of a range, refusing (with nothing done) a result past maxRangeEntries. */
  private range(r: unknown, op: string): [Buffer, Uint8Array][] {
    const { range, limit } = this.rangeOf(r);
    const max = this.limits.maxRangeEntries;
    const want = limit === undefined ? max + 1 : Math.min(limit, max + 1);
    const out: [Buffer, Uint8Array][] = [];
    if (want > 0) for (const e of this.store.scan(this.scope, range, this.buffer)) if (out.push(e) >= want) break;
    if (out.length > max) {
      throw new KvOpError(`${op}: the range holds more than ${max} entries (maxRangeEntries = ${max}); pass a limit`);
    }
    return out;
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'committed';
    try {
      if (this.buffer.size === 0) return;
      const durable = this.store.apply(this.scope, this.buffer);
      this.unlock();
      await durable;
    } finally {
      this.unlock();
    }
  }

  rollback(): void {
    if (this.state !== 'open') return;
    this.state = 'rolled-back';
    this.buffer.clear();
    this.unlock();
  }

  private unlock(): void {
    this.release?.();
    this.release = undefined;
  }
}
