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

/** Args of the kv guest's `set`: u32 key length (LE), the key, the value. */
export function kvSetArgs(key: string, value: string): Uint8Array {
  const k = new TextEncoder().encode(key);
  const v = new TextEncoder().encode(value);
  const out = new Uint8Array(4 + k.length + v.length);
  new DataView(out.buffer).setUint32(0, k.length, true);
  out.set(k, 4);
  out.set(v, 4 + k.length);
  return out;
}
