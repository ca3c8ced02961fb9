// Writes not yet in the store, laid over what a reader sees of it: a transaction's own
// buffer over committed data, and the scope's commits still on their way into LMDB
// (the overlay a writer inherits from the writers before it) over a worker's snapshot.
// Workers load it.
import { fromMapKey, mapKey, type ScopeKeys } from './keys.js';
import type { KvReader } from './txn.js';

/** A stored key (latin1) -> value, or null for a deletion. */
export type Layer = Map<string, Uint8Array | null>;

/**
 * The entries of `below` (lo <= key < hi, in key order or reverse) with `layer` laid over
 * them: a layer's value replaces the entry, its deletion hides it. Lazy.
 */
export function* laid(layer: Layer, below: Iterable<[Buffer, Uint8Array]>, lo: Buffer, hi: Buffer, reverse: boolean): Generator<[Buffer, Uint8Array]> {
  const over = [...layer.keys()].filter((k) => {
    const b = fromMapKey(k);
    return Buffer.compare(b, lo) >= 0 && Buffer.compare(b, hi) < 0;
  });
  over.sort();
  if (reverse) over.reverse();
  const before = (a: string, b: string) => (reverse ? a > b : a < b);
  let i = 0;
  for (const [key, value] of below) {
    const k = mapKey(key);
    while (i < over.length && before(over[i] as string, k)) {
      const o = over[i++] as string;
      const v = layer.get(o);
      if (v) yield [fromMapKey(o), v];
    }
    if (i < over.length && over[i] === k) {
      const v = layer.get(k);
      i++;
      if (v) yield [key, v];
      continue;
    }
    yield [key, value];
  }
  for (; i < over.length; i++) {
    const o = over[i] as string;
    const v = layer.get(o);
    if (v) yield [fromMapKey(o), v];
  }
}

/**
 * A reader of committed data that also sees a scope's pending commits: what the scope
 * will hold once they are in, whether or not they are yet when it reads. Its entry
 * count is exact either way (each pending key is weighed against the same snapshot).
 */
export class OverlayReader implements KvReader {
  readonly layer: Layer = new Map();

  /** @param writes the pending commits' writes, oldest first */
  constructor(
    readonly base: KvReader,
    writes: [Buffer, Uint8Array | null][],
  ) {
    for (const [k, v] of writes) this.layer.set(mapKey(k), v);
  }

  get(key: Buffer): Uint8Array | undefined {
    const v = this.layer.get(mapKey(key));
    return v === undefined ? this.base.get(key) : (v ?? undefined);
  }

  range(lo: Buffer, hi: Buffer, reverse: boolean): Generator<[Buffer, Uint8Array]> {
    return laid(this.layer, this.base.range(lo, hi, reverse), lo, hi, reverse);
  }

  count(scope: ScopeKeys): number {
    let n = this.base.count(scope);
    for (const [k, v] of this.layer) n += (v ? 1 : 0) - (this.base.get(fromMapKey(k)) !== undefined ? 1 : 0);
    return n;
  }
}
