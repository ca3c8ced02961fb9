// Modules in the shared PostgreSQL: bytes and records in plughost_modules, aliases in
// plughost_aliases, each change one SERIALIZABLE transaction that also bumps the 'modules'
// change version, so every replica reloads its index within a poll interval (and compiles a
// module on its first call there). Versions stay immutable across replicas: an alias pushed
// with other bytes on another replica meanwhile is ALREADY_EXISTS here.
import { PlughostError } from '../errors.js';
import { bumpChange } from '../pg/changes.js';
import type { PgDatabase } from '../pg/db.js';
import { aliasOf } from './names.js';
import type { AliasRecord, Index, ModuleRecord, ModuleStorage } from './storage.js';

export class PgModuleStorage implements ModuleStorage {
  readonly shared = true;

  /** `db` stays its opener's to close. */
  constructor(private readonly db: PgDatabase) {}

  async load(): Promise<Index> {
    const index: Index = { modules: {}, aliases: {} };
    const modules = await this.db.query<{ hash: string; name: string; size_bytes: string; limits: string; pushed_at: string }>('SELECT hash, name, size_bytes, limits, pushed_at FROM plughost_modules');
    for (const m of modules.rows) index.modules[m.hash] = { hash: m.hash, name: m.name, sizeBytes: Number(m.size_bytes), limits: JSON.parse(m.limits) as ModuleRecord['limits'], pushedAt: Number(m.pushed_at) };
    const aliases = await this.db.query<{ name: string; version: string; hash: string; pushed_at: string }>('SELECT name, version, hash, pushed_at FROM plughost_aliases');
    // an alias whose module row is not (yet) in this read is left out rather than half-shown
    for (const a of aliases.rows) if (index.modules[a.hash]) index.aliases[aliasOf(a.name, a.version)] = { name: a.name, version: a.version, hash: a.hash, pushedAt: Number(a.pushed_at) };
    return index;
  }

  async add(alias: AliasRecord, module?: { record: ModuleRecord; bytes: Uint8Array }): Promise<void> {
    await this.db.transaction(async (c) => {
      const taken = await c.query<{ hash: string }>('SELECT hash FROM plughost_aliases WHERE name = $1 AND version = $2', [alias.name, alias.version]);
      const other = taken.rows[0]?.hash;
      if (other === alias.hash) return;
      if (other) throw new PlughostError('ALREADY_EXISTS', `${aliasOf(alias.name, alias.version)} is already ${other}; versions are immutable: push a new version, or delete it first`);
      if (module) {
        const r = module.record;
        await c.query('INSERT INTO plughost_modules (hash, name, size_bytes, limits, pushed_at, bytes) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO NOTHING', [
          r.hash,
          r.name,
          r.sizeBytes,
          JSON.stringify(r.limits),
          r.pushedAt,
          Buffer.from(module.bytes.buffer, module.bytes.byteOffset, module.bytes.byteLength),
        ]);
      }
      await c.query('INSERT INTO plughost_aliases (name, version, hash, pushed_at) VALUES ($1, $2, $3, $4)', [alias.name, alias.version, alias.hash, alias.pushedAt]);
      await bumpChange(c, 'modules');
    });
  }

  async remove(aliases: string[], hash?: string): Promise<boolean> {
    return this.db.transaction(async (c) => {
      for (const a of aliases) {
        const at = a.lastIndexOf('@');
        await c.query('DELETE FROM plughost_aliases WHERE name = $1 AND version = $2', [a.slice(0, at), a.slice(at + 1)]);
      }
      // decided here, not from a replica's index: the bytes go only if no alias (here or
      // pushed meanwhile elsewhere) still names them, and they do go when the last one went
      // here, whatever another replica removed at the same time
      const gone = hash ? ((await c.query('DELETE FROM plughost_modules WHERE hash = $1 AND NOT EXISTS (SELECT 1 FROM plughost_aliases WHERE hash = $1)', [hash])).rowCount ?? 0) > 0 : false;
      await bumpChange(c, 'modules');
      return gone;
    });
  }

  async bytes(hash: string): Promise<Uint8Array> {
    const r = await this.db.query<{ bytes: Buffer }>('SELECT bytes FROM plughost_modules WHERE hash = $1', [hash]);
    if (!r.rows[0]) throw new PlughostError('NOT_FOUND', `no module ${hash}`);
    return r.rows[0].bytes;
  }
}
