// tokens add | ls | rm: edits the token file in a data directory. A running server picks
// the change up within a second (it watches the file's mtime).
import { join, resolve } from 'node:path';
import { TokenStore } from '../auth/tokens.js';
import { PlughostError } from '../errors.js';
import type { KvAccess } from '../kv/types.js';

const storeIn = (dataDir: string) => new TokenStore(join(resolve(dataDir), 'tokens.json'));

export function addToken(dataDir: string, o: { subject: string; tenant: string; admin: boolean; modules: string; kv: string }): { id: string; token: string } {
  if (!['none', 'read', 'write'].includes(o.kv)) throw new PlughostError('INVALID_ARGUMENT', `--kv must be none, read or write, not ${o.kv}`);
  const modules = o.modules.split(',').map((m) => m.trim()).filter(Boolean);
  return storeIn(dataDir).add({ subject: o.subject, tenant: o.tenant, admin: o.admin, modules, kv: o.kv as KvAccess });
}

export function listTokens(dataDir: string): string[] {
  return storeIn(dataDir).list().map((t) =>
    `${t.id}  ${t.subject.padEnd(16)} tenant=${t.tenant.padEnd(12)} ${t.admin ? 'admin ' : '      '} kv=${t.kv.padEnd(5)} modules=${t.modules.join(',') || '(none)'}  created ${new Date(t.createdAt).toISOString()}`);
}

export function removeToken(dataDir: string, id: string): void {
  if (!storeIn(dataDir).remove(id)) throw new PlughostError('NOT_FOUND', `no token with id ${id} in ${dataDir} (see plughost tokens ls)`);
}
