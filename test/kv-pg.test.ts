// The KV suite against the PostgreSQL store (a throwaway server per file), and what only a
// shared database has: writers of one scope on several stores (as on several replicas), and
// what a caller sees when the database aborts its transaction.
import test from 'ava';
import pg from 'pg';
import { kvSuite } from './helpers/kv-suite.js';
import { testPgOptions, usePgCluster } from './helpers/postgres.js';
import { PgDatabase, pgFailure } from '../src/pg/db.js';
import { PgKvStore } from '../src/kv/pg-store.js';
import { DEFAULT_KV_LIMITS } from '../src/runtime/options.js';
import { isPlughostError } from '../src/errors.js';
import type { ExecutionContext } from 'ava';
import { fixture } from './fixtures/build.js';
import { kvSetArgs } from './helpers/kv.js';
import { ctx, manager, valueOf } from './helpers/runtime.js';

const pgc = usePgCluster(test);

async function pgStore(t: ExecutionContext, url?: string): Promise<PgKvStore> {
  const db = await PgDatabase.open(testPgOptions(url ?? (await pgc.database('kv'))));
  const store = new PgKvStore(db, { lockTimeoutMs: 60_000 });
  t.teardown(async () => {
    await store.close();
    await db.close();
  });
  return store;
}

kvSuite({ name: 'postgres', store: (t) => pgStore(t) });

const counterOf = (v: unknown) => (v instanceof Uint8Array ? Number(Buffer.from(v).readUInt32LE(0)) : 0);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

test.serial('postgres: read-modify-write transactions on two stores sharing one database (two replicas), 8 at once, lose no update', async (t) => {
  const url = await pgc.database('replicas');
  const stores = [await pgStore(t, url), await pgStore(t, url)];
  const scope = { tenant: 't', module: 'counter' };
  const perWorker = 25;
  // no in-process scope lock here: every writer meets the others at the database's row lock
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      const store = stores[w % 2]!;
      for (let i = 0; i < perWorker; i++) {
        const txn = store.begin(scope, 'write', DEFAULT_KV_LIMITS);
        const n = counterOf(await txn.apply('kvGet', ['n']));
        await txn.apply('kvSet', ['n', u32(n + 1)]);
        t.true(await txn.commit());
      }
    }),
  );
  const r = stores[1]!.begin(scope, 'read', DEFAULT_KV_LIMITS);
  t.is(counterOf(await r.apply('kvGet', ['n'])), 8 * perWorker);
  t.is(await r.apply('kvCount', [{ reverse: false }]), 1n, 'the entry count stayed exact');
  await r.commit();
});

test.serial('postgres: a serialization failure (40001) at COMMIT fails the call with UNAVAILABLE, naming it, and nothing it wrote is kept', async (t) => {
  const url = await pgc.database('conflict');
  const store = await pgStore(t, url);
  // the database itself refuses at COMMIT, as a serializable engine does when it finds a conflict:
  // a deferred constraint trigger raising 40001 for one key (on this test's database only)
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query(`CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.k = 'doomed'::bytea THEN RAISE EXCEPTION 'injected conflict' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$`);
  await admin.query('CREATE CONSTRAINT TRIGGER refuse_doomed AFTER INSERT OR UPDATE ON plughost_kv DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_doomed()');
  const scope = { tenant: 't', module: 'conflict' };
  const txn = store.begin(scope, 'write', DEFAULT_KV_LIMITS);
  await txn.apply('kvSet', ['kept-not', Buffer.from('x')]);
  await txn.apply('kvSet', ['doomed', Buffer.from('x')]);
  t.true(await txn.apply('kvExists', ['doomed']) as boolean, 'the call read its own write before COMMIT');
  const failed = await t.throwsAsync(txn.commit());
  t.true(isPlughostError(failed, 'UNAVAILABLE'), String(failed));
  t.regex(failed!.message, /40001/);

  // through a guest: the call fails with UNAVAILABLE, its writes are not kept, the next call is served
  const m = await manager(t, { store });
  const kv = await m.load(await fixture('kv'), { name: 'conflict' });
  const call = await t.throwsAsync(kv.invoke(ctx({ tenant: 't' }), 'set', kvSetArgs('doomed', 'y')));
  t.true(isPlughostError(call, 'UNAVAILABLE'), String(call));
  t.regex(call!.message, /could not be committed, and none was made.*40001/);
  valueOf(await kv.invoke(ctx({ tenant: 't' }), 'set', kvSetArgs('fine', 'z')));
  const r = store.begin(scope, 'read', DEFAULT_KV_LIMITS);
  t.deepEqual(await r.apply('kvKeys', [{ reverse: false }]), ['fine'], 'only the call that committed left a key');
  await r.commit();
});

test.serial('postgres: 16 writers of 16 scopes at once all commit (no spurious conflict between scopes)', async (t) => {
  const store = await pgStore(t);
  await Promise.all(
    Array.from({ length: 16 }, async (_, w) => {
      const scope = { tenant: `t${w}`, module: 'many' };
      for (let i = 0; i < 20; i++) {
        const txn = store.begin(scope, 'write', DEFAULT_KV_LIMITS);
        const n = counterOf(await txn.apply('kvGet', ['n']));
        await txn.apply('kvSetBatch', [[['n', u32(n + 1)], [`k${i}`, u32(i)]]]);
        t.true(await txn.commit());
      }
    }),
  );
  const r = store.begin({ tenant: 't7', module: 'many' }, 'read', DEFAULT_KV_LIMITS);
  t.is(counterOf(await r.apply('kvGet', ['n'])), 20);
  t.is(await r.apply('kvCount', [{ reverse: false }]), 21n);
  await r.commit();
});

test('a socket error is UNAVAILABLE, though its code looks like a SQLSTATE; the server\'s own errors keep theirs', (t) => {
  const epipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
  t.is(pgFailure(epipe, 'kvGet').code, 'UNAVAILABLE');
  const missing = Object.assign(new pg.DatabaseError('relation "x" does not exist', 0, 'error'), { code: '42P01' });
  t.is(pgFailure(missing, 'kvGet').code, 'INTERNAL');
  const conflict = Object.assign(new pg.DatabaseError('could not serialize access', 0, 'error'), { code: '40001' });
  t.regex(pgFailure(conflict, 'commit').message, /SQLSTATE 40001/);
  t.is(pgFailure(conflict, 'commit').code, 'UNAVAILABLE');
});
