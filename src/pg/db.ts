// The connection pool to the shared PostgreSQL (or an engine that speaks its protocol:
// CockroachDB, YugabyteDB), its schema brought up to date on open, and the one place where
// a database failure becomes a PlughostError. Whoever opens it closes it (Plughost, the
// `tokens` command, a test).
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { PlughostError, messageOf } from '../errors.js';
import { migrate } from './schema.js';

export interface PgOptions {
  /** postgres://user:password@host:port/db (sslmode=... in it works as libpq's) */
  url: string;
  /** Connections at most; each call with KV holds one for its transaction. */
  poolSize: number;
  /** The server stops a statement after this long (statement_timeout); the client gives up shortly after. */
  statementTimeoutMs: number;
  /** The most a caller waits for a connection (opening one, or a free one in the pool). */
  connectTimeoutMs: number;
  /** TLS to the server: off, or on with a CA file to verify it against (and, with verify false, no verification). */
  tls?: { caFile?: string | undefined; verify: boolean } | undefined;
}

/** SQLSTATE classes a caller may retry: serialization failure and deadlock, connection, operator intervention, insufficient resources. */
const RETRYABLE_CLASS = /^(40|08|57|53)/;

/** A database failure, as the caller sees it: UNAVAILABLE (retryable) unless it is a bug of ours (a bad statement or schema). */
export function pgFailure(e: unknown, what: string): PlughostError {
  if (e instanceof PlughostError) return e;
  // only the server's errors carry a SQLSTATE: a socket's (EPIPE, EPERM...) look alike but are not
  const code = e instanceof pg.DatabaseError ? e.code : undefined;
  const sqlstate = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
  const detail = `${messageOf(e)}${sqlstate ? ` (SQLSTATE ${sqlstate})` : ''}`;
  // no SQLSTATE: the socket failed, timed out or was refused
  if (!sqlstate || RETRYABLE_CLASS.test(sqlstate)) return new PlughostError('UNAVAILABLE', `${what}: the PostgreSQL store is unavailable: ${detail}`, { cause: e });
  return new PlughostError('INTERNAL', `${what}: ${detail}`, { cause: e });
}

/** A serialization failure or deadlock: the transaction may be run again from its start. */
export const isConflict = (e: unknown) => ['40001', '40P01'].includes((e as { code?: string }).code ?? '');

export class PgDatabase {
  readonly pool: pg.Pool;
  private closed = false;

  private constructor(readonly options: PgOptions) {
    const { tls } = options;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize,
      connectionTimeoutMillis: options.connectTimeoutMs,
      idleTimeoutMillis: 30_000,
      statement_timeout: options.statementTimeoutMs,
      // the server ends a statement at statement_timeout; this bounds a dead socket
      query_timeout: options.statementTimeoutMs + 5_000,
      application_name: 'plughost',
      // a replica that froze or lost its network while holding a scope's row lock is noticed by TCP keepalive, not hours later
      keepAlive: true,
      ...(tls ? { ssl: { rejectUnauthorized: tls.verify, ...(tls.caFile ? { ca: readFileSync(tls.caFile, 'utf8') } : {}) } } : {}),
    });
    // an idle client whose server went away: the pool drops it and the next checkout reconnects
    this.pool.on('error', () => {});
    // a client checked out (a call's transaction between two statements) whose server went
    // away emits 'error' itself: unheard, that would end the process; its next query fails instead
    this.pool.on('connect', (client) => client.on('error', () => {}));
  }

  /** Connects, creates or migrates the schema; fails with UNAVAILABLE when the server cannot be reached. */
  static async open(options: PgOptions): Promise<PgDatabase> {
    const db = new PgDatabase(options);
    try {
      await migrate(db);
    } catch (e) {
      await db.close();
      throw pgFailure(e, 'opening the PostgreSQL store');
    }
    return db;
  }

  /** A connection of the pool (release it!); UNAVAILABLE when none can be had in connectTimeoutMs. */
  async connect(): Promise<pg.PoolClient> {
    if (this.closed) throw new PlughostError('UNAVAILABLE', 'the PostgreSQL store is closed');
    try {
      return await this.pool.connect();
    } catch (e) {
      throw pgFailure(e, 'connecting to PostgreSQL');
    }
  }

  /** One statement on its own (autocommit). */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    const c = await this.connect();
    let broken = false;
    try {
      return await c.query<R>(text, params);
    } catch (e) {
      broken = !(e as { code?: string }).code;
      throw pgFailure(e, 'a PostgreSQL query');
    } finally {
      c.release(broken);
    }
  }

  /**
   * Runs `fn` in a SERIALIZABLE transaction, again from the start on a serialization
   * failure (40001) or deadlock, up to `attempts` times; its result once committed.
   */
  async transaction<T>(fn: (c: pg.PoolClient) => Promise<T>, attempts = 10): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const c = await this.connect();
      let broken = false;
      try {
        await c.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        const out = await fn(c);
        await c.query('COMMIT');
        return out;
      } catch (e) {
        broken = !(e as { code?: string }).code && !(e instanceof PlughostError);
        if (!broken) await c.query('ROLLBACK').catch(() => (broken = true));
        if (isConflict(e) && attempt < attempts) {
          await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
          continue;
        }
        throw pgFailure(e, 'a PostgreSQL transaction');
      } finally {
        c.release(broken);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
