// The KV of one call tree in a worker: a top-level call and the calls made under it with
// `run` (which run here, inside it). Each works in a transaction of its own scope laid over
// what the calls above it in the chain wrote: nothing of a tree is committed before its
// top-level call ends. A nested call that succeeds hands its writes up to its caller (into
// the caller's own transaction when the scope is the caller's, else into what the caller
// holds for that scope); one that fails leaves nothing behind.
import type { ScopeKeys } from '../../kv/keys.js';
import { OverlayReader } from '../../kv/layer.js';
import { KvTxn, type KvReader } from '../../kv/txn.js';
import type { KvCommit } from '../../kv/types.js';

export interface Frame {
  scope: ScopeKeys & { tenant: string; module: string };
  /** Its own transaction, on its scope. */
  txn: KvTxn;
  /** What calls it made with run wrote to scopes other than its own, by scope id. */
  pending: Map<string, KvTxn>;
  parent: Frame | undefined;
  /** Per scope the tree touched: committed data, with the commits still on their way into LMDB laid over it. */
  bases: Map<string, OverlayReader>;
}

/** The tree's base reader of a scope (committed data, and what is laid over it), made on first use. */
export function baseOf(bases: Frame['bases'], committed: KvReader, scope: Frame['scope']): OverlayReader {
  let b = bases.get(scope.id);
  if (!b) bases.set(scope.id, (b = new OverlayReader(committed, [])));
  return b;
}

/** A transaction read as committed data by a call below it (its writes over what it reads). */
function readerOf(txn: KvTxn): KvReader {
  return {
    get: (key) => txn.get(key),
    range: (lo, hi, reverse) => txn.scan({ lo, hi, reverse }),
    count: (scope) => txn.reader.count(scope) + txn.entryDelta,
  };
}

/** What a call below `frame` reads of scope `id`: the nearest writes of the chain above it, else the tree's base. */
export function viewOf(frame: Frame | undefined, id: string, base: () => OverlayReader): KvReader {
  for (let f = frame; f; f = f.parent) {
    if (f.scope.id === id) return readerOf(f.txn);
    const held = f.pending.get(id);
    if (held) return readerOf(held);
  }
  return base();
}

/** A nested call succeeded: its writes (and those of the calls it made) become its caller's. */
export function handUp(child: Frame, parent: Frame, base: (scope: Frame['scope']) => OverlayReader): void {
  mergeInto(parent, child.scope, child.txn, base);
  for (const t of child.pending.values()) mergeInto(parent, t.scope as Frame['scope'], t, base);
}

function mergeInto(parent: Frame, scope: Frame['scope'], t: KvTxn, base: (scope: Frame['scope']) => OverlayReader): void {
  if (t.buffer.size === 0) return;
  let into = parent.scope.id === scope.id ? parent.txn : parent.pending.get(scope.id);
  if (!into) {
    // what the child read of this scope came from above its caller: so does what holds its writes
    into = new KvTxn(viewOf(parent.parent, scope.id, () => base(scope)), scope, 'write', t.limits);
    parent.pending.set(scope.id, into);
  }
  for (const [k, v] of t.buffer) into.buffer.set(k, v);
  into.entryDelta += t.entryDelta;
}

/** The writes a finished top-level call (or row) holds for scopes other than its own, as commit records. */
export function nestedCommits(top: Frame): { tenant: string; module: string; commit: KvCommit }[] {
  const out: { tenant: string; module: string; commit: KvCommit }[] = [];
  for (const t of top.pending.values()) {
    const commit = t.commitRecord();
    const scope = t.scope as Frame['scope'];
    if (commit) out.push({ tenant: scope.tenant, module: scope.module, commit: { ...commit, baseCount: undefined } });
  }
  return out;
}

/**
 * A top-level row's nested writes are committed after the hand-off, but the rows after it
 * must read them, as they read its own: lay them into the tree's bases.
 */
export function layPending(top: Frame): void {
  for (const [id, t] of top.pending) {
    const base = top.bases.get(id);
    if (base) for (const [k, v] of t.buffer) base.layer.set(k, v);
  }
}
