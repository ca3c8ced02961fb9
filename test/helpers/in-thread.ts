// A guest instantiated in this thread through its jco glue, with no worker (as the bench's
// in-thread echo does): for calling exports the Runtime does not call, and for seeing what
// jco itself makes of a guest's answers. Nothing to close: the instance is garbage.
import { compileComponent } from '../../src/component/load.js';

/** One element of `invoke-batch`'s result list, as jco lifts it. */
export type BatchRow = { tag: 'ok'; val: Uint8Array } | { tag: 'err'; val: string };

export interface InThreadGuest {
  /** Returns the value; the guest's err is thrown as its string. */
  invoke(name: string | undefined, args: Uint8Array): Uint8Array;
  invokeBatch(name: string | undefined, rows: Uint8Array[]): BatchRow[];
  listFunctions?(): (string | undefined)[];
}

/** `host`: the `plughost:plugin/host` imports by jco name (`kvGet`...), for a guest that imports any. */
export async function inThreadGuest(bytes: Uint8Array, host: object = {}): Promise<InThreadGuest> {
  const compiled = await compileComponent(bytes, { maxMemoryBytes: 16 << 20 });
  const glue = new Function(compiled.glue)() as { instantiate: Function };
  return glue.instantiate((n: string) => compiled.coreModules[n], { 'plughost:plugin/host': host }) as InThreadGuest;
}

/** A KV of one map for an in-thread guest's `kv-get`/`kv-set` (answers as the worker's imports give them). */
export function mapKv(map = new Map<string, Uint8Array>()) {
  return {
    map,
    kvGet: (key: string) => ({ tag: 'ok', val: map.get(key) }),
    kvSet: (key: string, value: Uint8Array) => (map.set(key, value.slice()), { tag: 'ok', val: undefined }),
  };
}
