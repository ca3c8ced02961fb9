// The store's tables, created or migrated when a replica opens the database. Only what
// PostgreSQL, CockroachDB and YugabyteDB all accept: plain tables with primary keys, bytea
// keys (compared bytewise), text and bigint; no extensions, triggers, sequences or advisory
// locks. Replicas that start together migrate one at a time: each takes the version row's
// lock in a SERIALIZABLE transaction and applies only the steps past the version it finds.
import type pg from 'pg';
import { isConflict, type PgDatabase } from './db.js';

/**
 * Each step moves the schema one version up; never edit a released step, add one. Each
 * statement may run again (IF NOT EXISTS, ON CONFLICT): an engine that commits DDL on its
 * own inside a transaction (YugabyteDB by default) may have kept part of a step that failed.
 */
export const MIGRATIONS: readonly string[][] = [
  // 1: KV, modules, tokens, change versions
  [
    `CREATE TABLE IF NOT EXISTS plughost_kv_scopes (tenant TEXT NOT NULL, module TEXT NOT NULL, entries BIGINT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (tenant, module))`,
    `CREATE TABLE IF NOT EXISTS plughost_kv (tenant TEXT NOT NULL, module TEXT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL, PRIMARY KEY (tenant, module, k))`,
    `CREATE TABLE IF NOT EXISTS plughost_modules (hash TEXT PRIMARY KEY, name TEXT NOT NULL, size_bytes BIGINT NOT NULL, limits TEXT NOT NULL, pushed_at BIGINT NOT NULL, bytes BYTEA NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS plughost_aliases (name TEXT NOT NULL, version TEXT NOT NULL, hash TEXT NOT NULL, pushed_at BIGINT NOT NULL, PRIMARY KEY (name, version))`,
    `CREATE TABLE IF NOT EXISTS plughost_tokens (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, grant_json TEXT NOT NULL, created_at BIGINT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS plughost_changes (what TEXT PRIMARY KEY, version BIGINT NOT NULL)`,
    `INSERT INTO plughost_changes (what, version) VALUES ('modules', 0), ('tokens', 0) ON CONFLICT (what) DO NOTHING`,
  ],
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Brings the schema to SCHEMA_VERSION; refuses a database a newer plughost migrated further. */
export async function migrate(db: PgDatabase): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      // concurrent first starts may race on these two; the loop runs them again
      await db.pool.query('CREATE TABLE IF NOT EXISTS plughost_schema (id INT PRIMARY KEY, version INT NOT NULL)');
      await db.pool.query('INSERT INTO plughost_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING');
      await inTransaction(db, async (c) => {
        const found = Number((await c.query<{ version: number }>('SELECT version FROM plughost_schema WHERE id = 1 FOR UPDATE')).rows[0]!.version);
        if (found > SCHEMA_VERSION) throw new Error(`the database's plughost schema is version ${found}, newer than this plughost's ${SCHEMA_VERSION}: upgrade plughost`);
        for (let v = found; v < SCHEMA_VERSION; v++) for (const statement of MIGRATIONS[v]!) await c.query(statement);
        if (found < SCHEMA_VERSION) await c.query('UPDATE plughost_schema SET version = $1 WHERE id = 1', [SCHEMA_VERSION]);
      });
      return;
    } catch (e) {
      // 23505/42P07: another replica created the same table at the same time
      const racing = isConflict(e) || ['23505', '42P07'].includes((e as { code?: string }).code ?? '');
      if (!racing || attempt >= 10) throw e;
      await new Promise((r) => setTimeout(r, 20 * attempt));
    }
  }
}

async function inTransaction(db: PgDatabase, fn: (c: pg.PoolClient) => Promise<void>): Promise<void> {
  const c = await db.pool.connect();
  try {
    await c.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
    await fn(c);
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    c.release();
  }
}
