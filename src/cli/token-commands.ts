// tokens add | ls | rm: edits the tokens of a data directory's file, or of the shared
// PostgreSQL store when --store (PLUGHOST_STORE) names one. A running server picks a change
// up within a second (it watches the file's mtime, or polls the store's change table).
import { join, resolve } from 'node:path';
import { FileTokenStore, type TokenStore } from '../auth/tokens.js';
import { PgTokenStore } from '../auth/pg-tokens.js';
import { PlughostError } from '../errors.js';
import type { KvAccess } from '../kv/types.js';
import { PgDatabase } from '../pg/db.js';
import { parseConfig } from '../service/config.js';

export interface TokenTarget {
  data: string;
  /** `lmdb` (the data directory's file) or a PostgreSQL URL */
  store?: string | undefined;
}

/** Runs `fn` on the target's token store, closing what it opened. */
async function withStore<T>(target: TokenTarget, fn: (s: TokenStore) => Promise<T>): Promise<T> {
  const config = parseConfig({ dataDir: target.data, ...(target.store ? { store: target.store } : {}) });
  if (config.store === 'lmdb') return fn(new FileTokenStore(join(resolve(config.dataDir), 'tokens.json')));
  const db = await PgDatabase.open({ url: config.store, ...config.postgres, poolSize: 1 });
  try {
    return await fn(await PgTokenStore.open(db));
  } finally {
    await db.close();
  }
}

const where = (target: TokenTarget) => (target.store && target.store !== 'lmdb' ? 'the PostgreSQL store' : target.data);

export function addToken(target: TokenTarget, o: { subject: string; tenant: string; admin: boolean; modules: string; kv: string }): Promise<{ id: string; token: string }> {
  if (!['none', 'read', 'write'].includes(o.kv)) throw new PlughostError('INVALID_ARGUMENT', `--kv must be none, read or write, not ${o.kv}`);
  const modules = o.modules.split(',').map((m) => m.trim()).filter(Boolean);
  return withStore(target, (s) => s.add({ subject: o.subject, tenant: o.tenant, admin: o.admin, modules, kv: o.kv as KvAccess }));
}

export function listTokens(target: TokenTarget): Promise<string[]> {
  return withStore(target, async (s) =>
    (await s.list()).map((t) =>
      `${t.id}  ${t.subject.padEnd(16)} tenant=${t.tenant.padEnd(12)} ${t.admin ? 'admin ' : '      '} kv=${t.kv.padEnd(5)} modules=${t.modules.join(',') || '(none)'}  created ${new Date(t.createdAt).toISOString()}`));
}

export async function removeToken(target: TokenTarget, id: string): Promise<void> {
  if (!(await withStore(target, (s) => s.remove(id)))) throw new PlughostError('NOT_FOUND', `no token with id ${id} in ${where(target)} (see plughost tokens ls)`);
}
