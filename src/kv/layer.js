// @ts-check
// Writes not yet in the store, laid over what a reader sees of it: a transaction's own
// buffer over committed data, and the scope's commits still on their way into LMDB
// (the overlay a writer inherits from the writers before it) over a worker's snapshot.
// Plain JavaScript: workers load it.
import { fromMapKey, mapKey } from './keys.js';

/** @typedef {Map<string, Uint8Array | null>} Layer a stored key (latin1) -> value, or null for a deletion */
/** @typedef {import('./txn.js').KvReader} KvReader */

/**
 * The entries of `below` (lo <= key < hi, in key order or reverse) with `layer` laid over
 * them: a layer's value replaces the entry, its deletion hides it. Lazy.
 * @param {Layer} layer
 * @param {Iterable<[Buffer, Uint8Array]>} below
 * @param {Buffer} lo
 * @param {Buffer} hi
 * @param {boolean} reverse
 * @returns {Generator<[Buffer, Uint8Array]>}
 */
export function* laid(layer, below, lo, hi, reverse) {
  const over = [...layer.keys()].filter((k) => {
    const b = fromMapKey(k);
    return Buffer.compare(b, lo) >= 0 && Buffer.compare(b, hi) < 0;
  });
  over.sort();
  if (reverse) over.reverse();
  /** @param {string} a @param {string} b */
  const before = (a, b) => (reverse ? a > b : a < b);
  let i = 0;
  for (const [key, value] of below) {
    const k = mapKey(key);
    while (i < over.length && before(/** @type {string} */ (over[i]), k)) {
      const o = /** @type {string} */ (over[i++]);
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
    const o = /** @type {string} */ (over[i]);
    const v = layer.get(o);
    if (v) yield [fromMapKey(o), v];
  }
}

/**
 * A reader of committed data that also sees a scope's pending commits: what the scope
 * will hold once they are in, whether or not they are yet when it reads. Its entry
 * count is exact either way (each pending key is weighed against the same snapshot).
 * @implements {KvReader}
 */
export class OverlayReader {
  /**
   * @param {KvReader} base
   * @param {[Buffer, Uint8Array | null][]} writes the pending commits' writes, oldest first
   */
  constructor(base, writes) {
    this.base = base;
    /** @type {Layer} */
    this.layer = new Map();
    for (const [k, v] of writes) this.layer.set(mapKey(k), v);
  }

  /** @param {Buffer} key */
  get(key) {
    const v = this.layer.get(mapKey(key));
    return v === undefined ? this.base.get(key) : (v ?? undefined);
  }

  /** @param {Buffer} lo @param {Buffer} hi @param {boolean} reverse */
  range(lo, hi, reverse) {
    return laid(this.layer, this.base.range(lo, hi, reverse), lo, hi, reverse);
  }

  /** @param {import('./keys.js').ScopeKeys} scope */
  count(scope) {
    let n = this.base.count(scope);
    for (const [k, v] of this.layer) n += (v ? 1 : 0) - (this.base.get(fromMapKey(k)) !== undefined ? 1 : 0);
    return n;
  }
}
