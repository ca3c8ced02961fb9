// The ids of one Stream's items and rows in flight, so that no id is answered twice at once:
// an item or batch that would put an id in flight a second time is refused instead. A batch
// that numbers its rows from first_id holds a range (no cost per row); explicit ids, items
// and small ranges are held one by one.
import { PlughostError } from '../errors.js';

const U64_MAX = (1n << 64n) - 1n;
/** Ranges up to this many rows are held id by id (a range check costs every later claim a comparison). */
const SMALL_RANGE = 64;

interface Range {
  lo: bigint;
  /** Exclusive. */
  hi: bigint;
}

/** What a claim holds until `release`. */
export type IdClaim = Range | bigint[];

export class IdsInFlight {
  private readonly singles = new Set<bigint>();
  private readonly ranges = new Set<Range>();

  /** Holds `id`; throws INVALID_ARGUMENT when it is in flight already. */
  claimOne(id: bigint): IdClaim {
    if (this.has(id)) throw inFlight(id);
    this.singles.add(id);
    return [id];
  }

  /** Holds `n` ids from `first`; throws INVALID_ARGUMENT when they pass 2^64 - 1 or one is in flight. */
  claimRange(first: bigint, n: number): IdClaim {
    const hi = first + BigInt(n);
    if (hi - 1n > U64_MAX) throw new PlughostError('INVALID_ARGUMENT', `the batch's row ids (first_id ${first} and ${n} rows) pass 2^64 - 1`);
    if (n <= SMALL_RANGE) return this.claimList(Array.from({ length: n }, (_, i) => first + BigInt(i)));
    for (const r of this.ranges) if (r.lo < hi && first < r.hi) throw inFlight(r.lo > first ? r.lo : first);
    // probe whichever is smaller: the singles held, or the range's ids
    if (this.singles.size <= n) {
      for (const id of this.singles) if (id >= first && id < hi) throw inFlight(id);
    } else {
      for (let id = first; id < hi; id++) if (this.singles.has(id)) throw inFlight(id);
    }
    const range = { lo: first, hi };
    this.ranges.add(range);
    return range;
  }

  /** Holds every id of `ids`; throws INVALID_ARGUMENT (holding none) when one repeats or is in flight. */
  claimList(ids: readonly bigint[]): IdClaim {
    const held: bigint[] = [];
    for (const id of ids) {
      if (this.has(id)) {
        const repeated = held.includes(id);
        for (const h of held) this.singles.delete(h);
        throw repeated ? new PlughostError('INVALID_ARGUMENT', `row id ${id} appears twice in the batch: no row was run`) : inFlight(id);
      }
      this.singles.add(id);
      held.push(id);
    }
    return held;
  }

  release(claim: IdClaim): void {
    if (Array.isArray(claim)) for (const id of claim) this.singles.delete(id);
    else this.ranges.delete(claim);
  }

  private has(id: bigint): boolean {
    if (this.singles.has(id)) return true;
    for (const r of this.ranges) if (id >= r.lo && id < r.hi) return true;
    return false;
  }
}

function inFlight(id: bigint): PlughostError {
  return new PlughostError('INVALID_ARGUMENT', `id ${id} is already in flight on this stream (its answer has not been sent): this was not run`);
}
