// postMessage copies the whole ArrayBuffer behind a typed array, not just its view: a
// 64-byte args slice of a gRPC frame would drag the frame (or Node's 8 KiB pool) along.
// Views are copied to their own small buffer before they cross to a worker.

export function compactBytes(b: Uint8Array): Uint8Array {
  // not b.slice(): on a Buffer (what grpc-js and lmdb hand us) slice is another view
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}

/** compactBytes applied through arrays and tuples (KV results: values, entries). */
export function compactDeep<T>(v: T): T {
  if (v instanceof Uint8Array) return compactBytes(v) as T;
  if (Array.isArray(v)) return v.map(compactDeep) as T;
  return v;
}
