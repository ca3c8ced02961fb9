// `invoke` called straight on the guest's core instance, for components that import
// nothing: the canonical ABI of this one export, by hand. jco's export wrapper sets up a
// component-model task for every call (an object of ~40 fields, bigint ids, maps), which
// cost ~5 µs of the ~9 a row took; a guest with no imports has nothing that task guards.
// The same rules as jco's glue with plughost's patches (src/component/load.ts): a string
// or list the guest points at out of bounds, a pointer cabi_realloc places where the bytes
// do not fit, a bad discriminant or an err message that is not UTF-8 trap the call.

export interface CoreInvoke {
  invoke: (...a: number[]) => number;
  memory: WebAssembly.Memory;
  realloc: (old: number, oldSize: number, align: number, size: number) => number;
  postReturn: ((ret: number) => void) | undefined;
}

const encoder = new TextEncoder();
const strict = new TextDecoder('utf-8', { fatal: true });

/** The core pieces of `invoke` on a core instance's exports, when they are all there. */
export function coreInvokeOf(exports: WebAssembly.Exports): CoreInvoke | undefined {
  const { invoke, memory, cabi_realloc: realloc } = exports;
  const postReturn = exports['cabi_post_invoke'];
  if (typeof invoke !== 'function' || invoke.length !== 5 || !(memory instanceof WebAssembly.Memory) || typeof realloc !== 'function') return undefined;
  if (postReturn !== undefined && typeof postReturn !== 'function') return undefined;
  return { invoke: invoke as CoreInvoke['invoke'], memory, realloc: realloc as CoreInvoke['realloc'], postReturn: postReturn as CoreInvoke['postReturn'] };
}

/** Copies `bytes` into guest memory where cabi_realloc says; traps if they do not fit there. */
function lower(core: CoreInvoke, bytes: Uint8Array): number {
  const p = core.realloc(0, 0, 1, bytes.byteLength) >>> 0;
  const buffer = core.memory.buffer;
  if (p + bytes.byteLength > buffer.byteLength) {
    throw new WebAssembly.RuntimeError(`cabi_realloc returned ${p}, where ${bytes.byteLength} bytes do not fit in the guest memory of ${buffer.byteLength} bytes`);
  }
  new Uint8Array(buffer, p, bytes.byteLength).set(bytes);
  return p;
}

/** `invoke(name, args)` as jco's wrapper answers it: the ok bytes, or the guest's err message thrown as a string. */
export function directInvoke(core: CoreInvoke, name: string | undefined, args: Uint8Array): Uint8Array {
  let some = 0;
  let namePtr = 0;
  let nameLen = 0;
  if (name !== undefined && name !== null) {
    some = 1;
    // as jco: an empty string is (1, 0), not allocated
    if (name.length === 0) namePtr = 1;
    else {
      const bytes = encoder.encode(name);
      namePtr = lower(core, bytes);
      nameLen = bytes.byteLength;
    }
  }
  const argsPtr = lower(core, args);
  const ret = core.invoke(some, namePtr, nameLen, argsPtr, args.byteLength) >>> 0;
  const view = new DataView(core.memory.buffer);
  const tag = view.getUint8(ret);
  const ptr = view.getUint32(ret + 4, true);
  const len = view.getUint32(ret + 8, true);
  let value: Uint8Array | string;
  if (tag === 0) value = new Uint8Array(core.memory.buffer, ptr, len).slice();
  else if (tag === 1) value = strict.decode(new Uint8Array(core.memory.buffer, ptr, len));
  else throw new TypeError('invalid variant discriminant for expected');
  core.postReturn?.(ret);
  if (typeof value === 'string') throw value;
  return value;
}
