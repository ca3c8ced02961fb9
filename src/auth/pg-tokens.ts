// Tokens in the shared PostgreSQL: every replica authenticates from its copy in memory
// (a call never waits for the database to check its token) and rereads the table when
// another replica changed it (pg/changes.ts), so an added or removed token takes effect
// everywhere within one poll interval.
import { PlughostError } from '../errors.js';
import { bumpChange } from '../pg/changes.js';
import type { PgDatabase } from '../pg/db.js';
import { Identity, type Grant } from './identity.js';
import { newToken, sha256, type StoredToken, type TokenInfo, type TokenStore } from './tokens.js';

interface Row {
  id: string;
  sha256: string;
  grant_json: string;
  created_at: string;
}

const storedOf = (r: Row): StoredToken => ({ ...(JSON.parse(r.grant_json) as Grant), id: r.id, sha256: r.sha256, createdAt: Number(r.created_at) });

export class PgTokenStore implements TokenStore {
  private byHash = new Map<string, Identity>();

  private constructor(private readonly db: PgDatabase) {}

  /** `db` stays its opener's to close. */
  static async open(db: PgDatabase): Promise<PgTokenStore> {
    const s = new PgTokenStore(db);
    await s.reload();
    return s;
  }

  authenticate(token: string): Identity | undefined {
    return this.byHash.get(sha256(token));
  }

  /** Rereads every token (another replica changed them). */
  async reload(): Promise<void> {
    const rows = (await this.db.query<Row>('SELECT id, sha256, grant_json, created_at FROM plughost_tokens')).rows;
    this.byHash = new Map(rows.map((r) => [r.sha256, new Identity(storedOf(r))]));
  }

  add(grant: Grant): Promise<{ id: string; token: string }> {
    return this.insert(grant, false) as Promise<{ id: string; token: string }>;
  }

  addFirst(grant: Grant): Promise<{ id: string; token: string } | undefined> {
    return this.insert(grant, true);
  }

  private async insert(grant: Grant, onlyIfNone: boolean): Promise<{ id: string; token: string } | undefined> {
    const { token, stored } = newToken(grant);
    const { sha256: hash, id, createdAt, ...g } = stored;
    const added = await this.db.transaction(async (c) => {
      // serializable: two replicas starting at once cannot both see none
      if (onlyIfNone && (await c.query('SELECT id FROM plughost_tokens LIMIT 1')).rows.length > 0) return false;
      await c.query('INSERT INTO plughost_tokens (id, sha256, grant_json, created_at) VALUES ($1, $2, $3, $4)', [id, hash, JSON.stringify(g), createdAt]);
      await bumpChange(c, 'tokens');
      return true;
    });
    if (!added) return undefined;
    this.byHash.set(hash, new Identity(stored));
    return { id, token };
  }

  async list(): Promise<TokenInfo[]> {
    const rows = (await this.db.query<Row>('SELECT id, sha256, grant_json, created_at FROM plughost_tokens ORDER BY created_at, id')).rows;
    return rows.map((r) => {
      const { sha256: _, ...t } = storedOf(r);
      return t;
    });
  }

  async remove(id: string): Promise<boolean> {
    if (!id) throw new PlughostError('INVALID_ARGUMENT', 'a token id is needed');
    const removed = await this.db.transaction(async (c) => {
      const r = await c.query<{ sha256: string }>('DELETE FROM plughost_tokens WHERE id = $1 RETURNING sha256', [id]);
      if (r.rows.length > 0) await bumpChange(c, 'tokens');
      return r.rows[0]?.sha256;
    });
    if (removed) this.byHash.delete(removed);
    return removed !== undefined;
  }
}
