import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LmdbKvStore, type LmdbKvStoreOptions } from '../../src/kv/lmdb-store.js';

/** A fresh directory removed when the test ends. */
export function tempDir(t: ExecutionContext, name = 'plughost'): string {
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A real LMDB store in a temp dir, closed when the test ends (before the dir goes). */
export function lmdbStore(t: ExecutionContext, options: Partial<LmdbKvStoreOptions> = {}): LmdbKvStore {
  const store = new LmdbKvStore({ path: join(tempDir(t, 'plughost-kv'), 'kv'), ...options });
  t.teardown(() => store.close());
  return store;
}
