// The KV suite against the PostgreSQL store (a throwaway server per file), and what only a
// shared database has: writers of one scope on several stores (as on several replicas), and
// what a caller sees when the database aborts its transaction.
import test from 'ava';
import pg from 'pg';
import { kvSuite } from './helpers/kv-suite.js';
import { testPgOptions, usePgCluster } from './helpers/postgres.js';
import { PgDatabase } from '../src/pg/db.js';
import { PgKvStore } from '../src/kv/pg-store.js';
import { DEFAULT_KV_LIMITS } from '../src/runtime/options.js';
import { isPlughostError } from '../src/errors.js';
import type { ExecutionContext } from 'ava';

const pgc = usePgCluster(test);

async function pgStore(t: ExecutionContext, url?: string): Promise<PgKvStore> {
  const db = await PgDatabase.open(testPgOptions(url ?? (await pgc.database('kv'))));
  const store = new PgKvStore(db);
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

test.serial('postgres: a serialization failure (40001) under a call fails it with UNAVAILABLE, naming it, and nothing it wrote is kept', async (t) => {
  const url = await pgc.database('conflict');
  const store = await pgStore(t, url);
  const scope = { tenant: 't', module: 'skew' };
  // a writer that takes no scope lock (another program on the same tables) makes a write skew with the call
  const other = new pg.Client({ connectionString: url });
  await other.connect();
  t.teardown(() => other.end());
  const call = store.begin(scope, 'write', DEFAULT_KV_LIMITS);
  t.is(await call.apply('kvGet', ['a']), undefined);
  await other.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
  await other.query("SELECT v FROM plughost_kv WHERE tenant = 't' AND module = 'skew' AND k = 'b'::bytea");
  await other.query("INSERT INTO plughost_kv (tenant, module, k, v) VALUES ('t', 'skew', 'a'::bytea, 'other'::bytea)");
  await other.query('COMMIT');
  // the call wrote b after reading a, which the other changed: one of them must abort, and the other committed first
  const failed = await t.throwsAsync(async () => {
    await call.apply('kvSet', ['b', Buffer.from('call')]);
    await call.commit();
  });
  t.true(isPlughostError(failed, 'UNAVAILABLE'), String(failed));
  t.regex(failed!.message, /40001/);
  t.truthy(call.failure, 'the transaction says it failed, so the call fails whatever the guest answered');
  call.rollback();
  const r = store.begin(scope, 'read', DEFAULT_KV_LIMITS);
  t.deepEqual(await r.apply('kvKeys', [{ reverse: false }]), ['a'], "only the other writer's key is there");
  await r.commit();
});
