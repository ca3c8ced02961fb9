// What holds the service's state, chosen by `store`: the data directory (LMDB for KV, files
// for modules and tokens; one process) or a PostgreSQL that several replicas share (KV,
// modules and tokens in its tables, changes made elsewhere picked up by polling). Whoever
// opens a backend closes it; it closes what it opened, in order.
import { join } from 'node:path';
import { PgTokenStore } from '../auth/pg-tokens.js';
import { FileTokenStore, type TokenStore } from '../auth/tokens.js';
import { LmdbKvStore } from '../kv/lmdb-store.js';
import { PgKvStore } from '../kv/pg-store.js';
import type { KvStore } from '../kv/types.js';
import { ChangePoller } from '../pg/changes.js';
import { PgDatabase } from '../pg/db.js';
import { PgModuleStorage } from '../registry/pg-storage.js';
import type { ModuleRegistry } from '../registry/registry.js';
import { FileModuleStorage, type ModuleStorage } from '../registry/storage.js';
import type { PlughostConfig } from './config.js';
import type { Logger } from './logger.js';

export interface Backend {
  /** `lmdb`, or `postgres` for a shared store. */
  readonly kind: 'lmdb' | 'postgres';
  readonly store: KvStore;
  readonly tokens: TokenStore;
  readonly modules: ModuleStorage;
  /** Keeps the registry and the tokens up to date with changes other replicas make (shared stores only). */
  watch(registry: ModuleRegistry): Promise<void>;
  close(): Promise<void>;
}

export async function openBackend(config: PlughostConfig, dataDir: string, logger: Logger): Promise<Backend> {
  if (config.store === 'lmdb') {
    const store = new LmdbKvStore({ path: join(dataDir, 'kv'), commitMode: config.kv.commitMode, lockTimeoutMs: config.kv.lockTimeoutMs });
    return {
      kind: 'lmdb',
      store,
      tokens: new FileTokenStore(join(dataDir, 'tokens.json')),
      modules: new FileModuleStorage(dataDir),
      watch: async () => {},
      close: () => store.close(),
    };
  }
  const { pollMs, ...connection } = config.postgres;
  const db = await PgDatabase.open({ url: config.store, ...connection });
  let poller: ChangePoller | undefined;
  try {
    const store = new PgKvStore(db, { lockTimeoutMs: config.kv.lockTimeoutMs });
    const tokens = await PgTokenStore.open(db);
    return {
      kind: 'postgres',
      store,
      tokens,
      modules: new PgModuleStorage(db),
      watch: async (registry) => {
        poller = new ChangePoller(db, pollMs, { modules: () => registry.reload(), tokens: () => tokens.reload() }, (e) => {
          // said once per outage, not once per poll
          if (e) logger.warn({ err: e }, 'cannot read module and token changes from PostgreSQL; retrying');
          else logger.info('reading module and token changes from PostgreSQL again');
        });
        await poller.start();
        // what changed between the first reads and the poller's first look (the workers start in between)
        await Promise.all([registry.reload(), tokens.reload()]);
      },
      close: async () => {
        await poller?.stop();
        await store.close();
        await db.close();
      },
    };
  } catch (e) {
    await db.close();
    throw e;
  }
}
