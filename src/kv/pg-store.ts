// The KV store on PostgreSQL (or CockroachDB, YugabyteDB), shared by every replica. Each
// call's KV runs in one database transaction on one pooled connection, from its first
// operation to its commit: reads see committed data and the call's own writes (the
// database keeps them), nothing is visible to others before COMMIT, and a rollback (guest
// err, trap, timeout) leaves nothing.
//
// Isolation by explicit locking, not by SERIALIZABLE: a call that may write takes its
// scope's row in plughost_kv_scopes with `SELECT ... FOR UPDATE` as its first statement, in
// a READ COMMITTED transaction, and every write to a scope's keys is made under that lock;
// so writers of one scope run one after another across all replicas, each reading the
// latest commit, and no update is lost. (Measured: with SERIALIZABLE, PostgreSQL's
// predicate locks on shared index pages failed one writer in several with 40001 when 16
// writers of 16 different scopes ran at once.) A call that may only read runs in a
// REPEATABLE READ READ ONLY transaction: one snapshot for all its reads, never blocked, never
// blocking. In this process the scope's lock (scope-locks.ts, as for LMDB) orders writers
// before they reach the database.
//
// An engine that runs READ COMMITTED as SERIALIZABLE or snapshot (CockroachDB, YugabyteDB
// without it enabled) may fail the lock statement with 40001 when the row changed since
// the snapshot: nothing was read yet, so it is begun again, unseen by the guest. Any later
// failure (a 40001 at COMMIT, the database gone) fails the call with UNAVAILABLE and
// nothing written. Workers cannot read this store (`local` is unset): every KV operation
// comes over the host-call bridge.
import pg from 'pg';
import { PlughostError } from '../errors.js';
import { isConflict, pgFailure, type PgDatabase } from '../pg/db.js';
import { KvOpError } from './kv-error.js';
import { decodeKey, encodeKey, mapKey, scopeId, type ScopeKeys } from './keys.js';
import { ScopeLocks } from './scope-locks.js';
import { checkAccess, checkBatch, checkValue, entryLimitReached, rangeTooBig } from './txn.js';
import type { KvAccess, KvLimits, KvScope, KvStore, KvTransaction, Savepoint } from './types.js';

/** Keys as the guest gives them: the scope is in columns of their own. */
const BARE: ScopeKeys = { prefix: Buffer.alloc(0), below: Buffer.alloc(0), above: Buffer.alloc(0), id: '' };
/** Times a writer's first statement is begun again after a serialization failure. */
const LOCK_ATTEMPTS = 50;

export interface PgKvStoreOptions {
  /** The most a writing call waits for its scope's lock in this process (default 10 s; the call's deadline lowers it). */
  lockTimeoutMs?: number;
}

export class PgKvStore implements KvStore {
  private readonly locks = new ScopeLocks();
  readonly lockTimeoutMs: number;
  /** Scopes whose row is known to exist (rows are never deleted). */
  private readonly scopesKnown = new Set<string>();
  private readonly open = new Set<PgTransaction>();
  private closed = false;

  /** `db` stays its opener's to close. */
  constructor(
    readonly db: PgDatabase,
    options: PgKvStoreOptions = {},
  ) {
    this.lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
  }

  begin(scope: KvScope, access: KvAccess, limits: KvLimits): KvTransaction {
    if (this.closed) throw new PlughostError('UNAVAILABLE', 'the KV store is closed');
    const txn = new PgTransaction(this, scope, access, limits);
    this.open.add(txn);
    return txn;
  }

  lockScope(scope: KvScope, timeoutMs = this.lockTimeoutMs): Promise<() => void> {
    return this.locks.acquire(scopeId(scope), Math.min(timeoutMs, this.lockTimeoutMs));
  }

  /** Commits that come from workers exist only for a store the workers read (`local`): this one is not. */
  commit(): { visible: Promise<void>; durable: Promise<void> } {
    const e = Promise.reject(new PlughostError('INTERNAL', 'the PostgreSQL KV store commits only its own transactions'));
    e.catch(() => {});
    return { visible: e, durable: e };
  }

  /** A COMMIT that PostgreSQL acknowledged is durable: nothing to wait for. */
  readBarrier(): undefined {
    return undefined;
  }

  /** @internal makes sure the scope's row exists (in a statement of its own, outside any call's transaction) */
  async ensureScope(scope: KvScope): Promise<void> {
    const id = scopeId(scope);
    if (this.scopesKnown.has(id)) return;
    await this.db.query('INSERT INTO plughost_kv_scopes (tenant, module, entries, version) VALUES ($1, $2, 0, 0) ON CONFLICT (tenant, module) DO NOTHING', [scope.tenant, scope.module]);
    this.scopesKnown.add(id);
  }

  /** @internal */
  ended(txn: PgTransaction): void {
    this.open.delete(txn);
  }

  /** Rolls back transactions still open; the database stays its opener's. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.open) t.rollback();
    await Promise.allSettled([...this.open].map((t) => t.settled));
  }
}

type Entry = readonly [Buffer, Uint8Array | null];

class PgTransaction implements KvTransaction {
  private client: pg.PoolClient | undefined;
  private opening: Promise<pg.PoolClient> | undefined;
  /** The scope's entry count when the writer locked it, and the change its writes make. */
  private entries = 0;
  private delta = 0;
  private wrote = false;
  /**
   * Keys whose presence this transaction knows (it read or wrote them): a writer holds the
   * scope's lock, so they stay as known, and a write of a known key needs no lookup first.
   */
  private known = new Map<string, boolean>();
  /** SAVEPOINTs taken so far (their names). */
  private savepoints = 0;
  /** Operations run one at a time, in order. */
  private queue: Promise<unknown> = Promise.resolve();
  private state: 'open' | 'committed' | 'rolled-back' = 'open';
  didRead = false;
  /** Set when the database failed under the transaction: the call fails with it, whatever the guest answered. */
  failure: PlughostError | undefined;
  /** Resolves once its connection is back in the pool. */
  settled: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: PgKvStore,
    private readonly scope: KvScope,
    readonly access: KvAccess,
    private readonly limits: KvLimits,
  ) {}

  apply(op: string, args: unknown[]): Promise<unknown> {
    const run = this.queue.then(() => this.run(op, args));
    this.queue = run.catch(() => {});
    return run;
  }

  private async run(op: string, args: unknown[]): Promise<unknown> {
    if (this.state !== 'open') throw new KvOpError(`${op}: the call's transaction is already finished`);
    if (this.failure) throw this.failure;
    checkAccess(op, this.access);
    try {
      return await this.op(op, args);
    } catch (e) {
      if (e instanceof KvOpError) throw e;
      // the database transaction is aborted or its connection lost: the call cannot commit
      this.failure ??= pgFailure(e, `${op}`);
      throw this.failure;
    }
  }

  private async op(op: string, args: unknown[]): Promise<unknown> {
    switch (op) {
      case 'kvGet':
        return (await this.getMany([this.key(args[0])]))[0];
      case 'kvExists':
        return (await this.getMany([this.key(args[0])]))[0] !== undefined;
      case 'kvGetBatch':
        return this.getMany(checkBatch(args[0], this.limits).map((k) => this.key(k)));
      case 'kvSet':
        return this.setAll([[this.key(args[0]), checkValue(args[1], this.limits)]]);
      case 'kvDel':
        return this.setAll([[this.key(args[0]), null]]);
      case 'kvSetBatch':
        return this.setAll(
          checkBatch(args[0], this.limits).map((e) => {
            if (!Array.isArray(e) || e.length !== 2) throw new KvOpError('kvSetBatch: each entry must be a (key, value) pair');
            return [this.key(e[0]), checkValue(e[1], this.limits)] as const;
          }),
        );
      case 'kvDelBatch':
        return this.setAll(checkBatch(args[0], this.limits).map((k) => [this.key(k), null] as const));
      case 'kvKeys':
        return (await this.range(args[0], op, false)).map(([k]) => decodeKey(BARE, k));
      case 'kvEntries':
        return (await this.range(args[0], op, true)).map(([k, v]) => [decodeKey(BARE, k), v]);
      case 'kvCount': {
        const r = this.rangeOf(args[0]);
        if (r.limit === 0) return 0n;
        const { text, params } = this.rangeSql(r, '1', r.limit);
        const c = await this.conn();
        this.didRead = true;
        const rows = await c.query<{ n: string }>(`SELECT count(*) AS n FROM (${text}) AS r`, params);
        return BigInt(rows.rows[0]!.n);
      }
      case 'kvDelRange': {
        const doomed = (await this.range(args[0], op, false)).map(([k]) => k);
        if (doomed.length > 0) {
          const c = await this.conn();
          await c.query('DELETE FROM plughost_kv WHERE tenant = $1 AND module = $2 AND k = ANY($3::bytea[])', [this.scope.tenant, this.scope.module, doomed]);
          this.delta -= doomed.length;
          for (const k of doomed) this.known.set(mapKey(k), false);
          this.wrote = true;
        }
        return BigInt(doomed.length);
      }
      default:
        throw new KvOpError(`${op} is not a KV operation`);
    }
  }

  private key(k: unknown): Buffer {
    return encodeKey(BARE, k, this.limits.maxKeyBytes);
  }

  private async getMany(keys: Buffer[]): Promise<(Uint8Array | undefined)[]> {
    const c = await this.conn();
    this.didRead = true;
    const found = new Map<string, Uint8Array>();
    const r = await c.query<{ k: Buffer; v: Buffer }>('SELECT k, v FROM plughost_kv WHERE tenant = $1 AND module = $2 AND k = ANY($3::bytea[])', [this.scope.tenant, this.scope.module, keys]);
    for (const row of r.rows) found.set(mapKey(row.k), new Uint8Array(row.v));
    return keys.map((k) => {
      const v = found.get(mapKey(k));
      this.known.set(mapKey(k), v !== undefined);
      return v;
    });
  }

  /** All or nothing: the entry limit is checked for the whole group before anything is written. */
  private async setAll(entries: readonly Entry[]): Promise<undefined> {
    // the last write of a key wins, as in one LMDB transaction
    const last = new Map<string, Entry>();
    for (const e of entries) last.set(mapKey(e[0]), e);
    const c = await this.conn();
    // which keys exist (for the entry count): looked up only for those this transaction does not know yet
    const unknown = [...last.values()].map(([k]) => k).filter((k) => !this.known.has(mapKey(k)));
    const found = unknown.length === 0 ? [] : (await c.query<{ k: Buffer }>('SELECT k FROM plughost_kv WHERE tenant = $1 AND module = $2 AND k = ANY($3::bytea[])', [this.scope.tenant, this.scope.module, unknown])).rows;
    const existing = new Set(found.map((r) => mapKey(r.k)));
    for (const [m] of last) if (this.known.get(m)) existing.add(m);
    let delta = this.delta;
    for (const [key, value] of last.values()) delta += (value ? 1 : 0) - (existing.has(mapKey(key)) ? 1 : 0);
    if (delta > 0 && this.entries + delta > this.limits.maxEntriesPerScope) throw entryLimitReached(this.limits);
    const sets = [...last.values()].filter(([, v]) => v !== null) as [Buffer, Uint8Array][];
    const dels = [...last.values()].filter(([k, v]) => v === null && existing.has(mapKey(k))).map(([k]) => k);
    if (sets.length > 0) {
      await c.query(
        'INSERT INTO plughost_kv (tenant, module, k, v) SELECT $1, $2, u.k, u.v FROM unnest($3::bytea[], $4::bytea[]) AS u(k, v) ON CONFLICT (tenant, module, k) DO UPDATE SET v = excluded.v',
        [this.scope.tenant, this.scope.module, sets.map(([k]) => k), sets.map(([, v]) => Buffer.from(v.buffer, v.byteOffset, v.byteLength))],
      );
    }
    if (dels.length > 0) await c.query('DELETE FROM plughost_kv WHERE tenant = $1 AND module = $2 AND k = ANY($3::bytea[])', [this.scope.tenant, this.scope.module, dels]);
    this.delta = delta;
    for (const [m, [, v]] of last) this.known.set(m, v !== null);
    this.wrote ||= sets.length > 0 || dels.length > 0;
    return undefined;
  }

  private rangeOf(r: unknown): { lo: Buffer | undefined; hi: Buffer | undefined; reverse: boolean; limit: number | undefined } {
    if (typeof r !== 'object' || r === null) throw new KvOpError('range must be a key-range record');
    const { start, end, limit, reverse } = r as { start?: string; end?: string; limit?: number; reverse?: boolean };
    return {
      lo: start === undefined ? undefined : this.key(start),
      hi: end === undefined ? undefined : this.key(end),
      reverse: reverse === true,
      limit: limit === undefined ? undefined : limit,
    };
  }

  private rangeSql(r: { lo: Buffer | undefined; hi: Buffer | undefined; reverse: boolean }, columns: string, limit: number | undefined): { text: string; params: unknown[] } {
    const params: unknown[] = [this.scope.tenant, this.scope.module];
    let text = `SELECT ${columns} FROM plughost_kv WHERE tenant = $1 AND module = $2`;
    if (r.lo) text += ` AND k >= $${params.push(r.lo)}`;
    if (r.hi) text += ` AND k < $${params.push(r.hi)}`;
    text += ` ORDER BY k${r.reverse ? ' DESC' : ''}`;
    if (limit !== undefined) text += ` LIMIT $${params.push(limit)}`;
    return { text, params };
  }

  /** Entries of a range, refusing (with nothing done) a result past maxRangeEntries. */
  private async range(raw: unknown, op: string, values: boolean): Promise<[Buffer, Uint8Array][]> {
    const r = this.rangeOf(raw);
    const max = this.limits.maxRangeEntries;
    const want = r.limit === undefined ? max + 1 : Math.min(r.limit, max + 1);
    if (want <= 0) return [];
    const { text, params } = this.rangeSql(r, values ? 'k, v' : 'k', want);
    const c = await this.conn();
    this.didRead = true;
    const rows = (await c.query<{ k: Buffer; v?: Buffer }>(text, params)).rows;
    if (rows.length > max) throw rangeTooBig(op, max);
    return rows.map((row) => [row.k, row.v ? new Uint8Array(row.v) : new Uint8Array()]);
  }

  /** The transaction's connection, begun on first use; a writer's first statement locks its scope's row. */
  private conn(): Promise<pg.PoolClient> {
    if (this.client) return Promise.resolve(this.client);
    this.opening ??= this.begin().then((c) => (this.client = c));
    return this.opening;
  }

  private async begin(): Promise<pg.PoolClient> {
    const writer = this.access === 'write';
    if (writer) await this.store.ensureScope(this.scope);
    for (let attempt = 1; ; attempt++) {
      const c = await this.store.db.connect();
      try {
        if (writer) {
          // BEGIN and the lock in one round trip (a simple query of two statements, the scope's names as escaped literals)
          const [, locked] = (await c.query(
            `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT entries FROM plughost_kv_scopes WHERE tenant = ${c.escapeLiteral(this.scope.tenant)} AND module = ${c.escapeLiteral(this.scope.module)} FOR UPDATE`,
          )) as unknown as [pg.QueryResult, pg.QueryResult<{ entries: string }>];
          this.entries = Number(locked.rows[0]!.entries);
        } else {
          // sent without waiting: the connection runs it before the first read; should it fail, so does the transaction
          c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY').catch((e: unknown) => void (this.failure ??= pgFailure(e, 'begin')));
        }
        return c;
      } catch (e) {
        const conflict = isConflict(e);
        await c.query('ROLLBACK').catch(() => {});
        c.release(!conflict);
        // a writer whose snapshot predates another writer's commit (engines without READ COMMITTED): nothing was read yet, begin again
        if (conflict && attempt < LOCK_ATTEMPTS) {
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(20, attempt * 2)));
          continue;
        }
        throw e;
      }
    }
  }

  async commit(): Promise<boolean> {
    if (this.state !== 'open') return false;
    // what is queued first (an operation still on its way, a failed nested call going back to its savepoint)
    await this.queue;
    if (this.state !== 'open') return false;
    this.state = 'committed';
    const c = this.client ?? (this.opening ? await this.opening.catch(() => undefined) : undefined);
    if (!c) {
      this.end(undefined, false);
      if (this.failure) throw this.failure;
      return false;
    }
    if (this.failure) {
      this.end(c, true);
      throw this.failure;
    }
    if (!this.wrote) {
      // nothing to keep: ROLLBACK ends it (and frees a writer's row lock) without waiting for a WAL flush, as a COMMIT after FOR UPDATE would
      let broken = false;
      await c.query('ROLLBACK').catch(() => (broken = true));
      this.end(c, broken);
      return false;
    }
    try {
      // the bump makes a writer waiting on a snapshot engine fail its lock statement (and begin again) rather than a later one
      // the count and the COMMIT in one round trip (a simple query: the statement after a failed one does not run)
      await c.query(
        `UPDATE plughost_kv_scopes SET entries = entries + ${Math.trunc(this.delta)}, version = version + 1 WHERE tenant = ${c.escapeLiteral(this.scope.tenant)} AND module = ${c.escapeLiteral(this.scope.module)}; COMMIT`,
      );
    } catch (e) {
      // 40001 at COMMIT, or the connection lost: nothing of it is visible (for a lost connection, the server rolls back unless the COMMIT had reached it)
      this.failure = pgFailure(e, 'commit');
      this.end(c, true);
      throw this.failure;
    }
    this.end(c, false);
    return true;
  }

  /**
   * A SQL SAVEPOINT, in the order of the transaction's operations: a call made with run that
   * fails goes back to it (nested.ts). Taken only once the transaction is open; before that
   * there is nothing to keep, and going back ends the transaction, which opens again (and
   * locks again) on its next operation.
   */
  savepoint(): Savepoint {
    const name = `plughost_${++this.savepoints}`;
    const was = { delta: this.delta, wrote: this.wrote, known: new Map(this.known) };
    let marked = false;
    const mark = this.queue.then(async () => {
      if (this.state !== 'open' || this.failure || !this.client) return;
      await this.client.query(`SAVEPOINT ${name}`);
      marked = true;
    });
    this.queue = mark.catch((e) => void (this.failure ??= pgFailure(e, 'savepoint')));
    const release = () => {
      // let go once it is not needed: PostgreSQL slows every session once a transaction holds more than 64 subtransactions
      const let_go = this.queue.then(async () => {
        if (marked && this.state === 'open' && !this.failure && this.client) await this.client.query(`RELEASE SAVEPOINT ${name}`);
      });
      this.queue = let_go.catch((e) => void (this.failure ??= pgFailure(e, 'release savepoint')));
    };
    const undo = () => {
      const back = this.queue.then(async () => {
        if (this.state !== 'open' || this.failure) return;
        if (marked) await this.client!.query(`ROLLBACK TO SAVEPOINT ${name}`);
        else if (this.client) {
          // opened after the mark: all of it goes
          const c = this.client;
          this.client = undefined;
          this.opening = undefined;
          let broken = false;
          await c.query('ROLLBACK').catch(() => (broken = true));
          c.release(broken);
        }
        this.delta = was.delta;
        this.wrote = was.wrote;
        this.known = was.known;
      });
      this.queue = back.catch((e) => void (this.failure ??= pgFailure(e, 'rollback to savepoint')));
    };
    return { undo, release };
  }

  rollback(): void {
    if (this.state !== 'open') return;
    this.state = 'rolled-back';
    this.settled = (async () => {
      await this.queue;
      const c = this.client ?? (this.opening ? await this.opening.catch(() => undefined) : undefined);
      if (!c) return this.end(undefined, false);
      // a connection that failed (no answer from the server, the socket gone) is not asked
      // for a ROLLBACK that would queue behind the query it hangs on: it is dropped, and the
      // server rolls back when it sees it gone
      if (this.failure && !(this.failure.cause instanceof pg.DatabaseError)) return this.end(c, true);
      let broken = false;
      await c.query('ROLLBACK').catch(() => (broken = true));
      this.end(c, broken);
    })();
  }

  private end(c: pg.PoolClient | undefined, broken: boolean): void {
    this.client = undefined;
    c?.release(broken);
    this.store.ended(this);
  }
}

