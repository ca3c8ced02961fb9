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
