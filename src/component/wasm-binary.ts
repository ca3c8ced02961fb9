// Just enough of the WebAssembly binary format to tell components from core modules and
// to put a hard maximum on a core module's memory before it is compiled.
import { PlughostError } from '../errors.js';

export const WASM_PAGE = 65536;
const MAGIC = [0x00, 0x61, 0x73, 0x6d];

export type BinaryKind = 'component' | 'core-module' | 'not-wasm';

export function binaryKind(bytes: Uint8Array): BinaryKind {
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) return 'not-wasm';
  // version 1 layer 0 is a core module; 0x0d layer 1 is a component
  if (bytes[4] === 0x01 && bytes[5] === 0x00 && bytes[6] === 0x00 && bytes[7] === 0x00) return 'core-module';
  if (bytes[6] === 0x01 && bytes[7] === 0x00) return 'component';
  return 'not-wasm';
}

export function readU32(buf: Uint8Array, pos: number): [number, number] {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (pos >= buf.length) throw new PlughostError('INVALID_MODULE', 'truncated core module');
    const b = buf[pos++]!;
    result |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return [result >>> 0, pos];
    shift += 7;
    if (shift > 28) throw new PlughostError('INVALID_MODULE', 'malformed LEB128 in core module');
  }
}

function writeU32(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

export function readName(buf: Uint8Array, pos: number): [string, number] {
  const [len, p] = readU32(buf, pos);
  return [Buffer.from(buf.subarray(p, p + len)).toString('utf8'), p + len];
}

/** Throws when the import section imports a memory: a guest must own its memory so we can cap it. */
function refuseImportedMemory(buf: Uint8Array, start: number, end: number, name: string): void {
  let [count, p] = readU32(buf, start);
  for (let i = 0; i < count && p < end; i++) {
    let module: string;
    [module, p] = readName(buf, p);
    [, p] = readName(buf, p);
    const kind = buf[p++];
    if (kind === 0x02) {
      throw new PlughostError('INVALID_MODULE', `core module ${name} imports its memory from "${module}"; plughost needs guests that define their own memory`);
    }
    const next = skipImportType(buf, p, kind!);
    if (next === undefined) return; // an import kind we do not know: leave it to the compiler to judge
    p = next;
  }
}

/**
 * The position after an import's type: func (typeidx), table (reftype + limits), memory
 * (limits), global (valtype + mut), tag (attr + typeidx); undefined for a kind not known here.
 */
function skipImportType(buf: Uint8Array, p: number, kind: number): number | undefined {
  if (kind === 0x00) return readU32(buf, p)[1];
  if (kind === 0x01 || kind === 0x02) {
    if (kind === 0x01) p++;
    const flags = buf[p++]!;
    [, p] = readU32(buf, p);
    return flags & 1 ? readU32(buf, p)[1] : p;
  }
  if (kind === 0x03) return p + 2;
  if (kind === 0x04) return readU32(buf, p + 1)[1];
  return undefined;
}

/**
 * Returns a copy of a core module whose every defined memory has maximum
 * min(declared maximum, maxPages). A `memory.grow` past it then fails inside the guest
 * instead of the process allocating up to 4 GiB. memory64, shared memories and imported
 * memories are refused.
 */
export function capCoreMemory(bytes: Uint8Array, maxPages: number, name: string): Uint8Array {
  if (binaryKind(bytes) !== 'core-module') throw new PlughostError('INVALID_MODULE', `${name} is not a core module`);
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  let pos = 8;
  while (pos < bytes.length) {
    const id = bytes[pos]!;
    const [size, start] = readU32(bytes, pos + 1);
    const end = start + size;
    if (end > bytes.length) throw new PlughostError('INVALID_MODULE', `core module ${name} is truncated`);
    if (id === 2) refuseImportedMemory(bytes, start, end, name);
    if (id !== 5) {
      parts.push(bytes.subarray(pos, end));
      pos = end;
      continue;
    }
    let [count, p] = readU32(bytes, start);
    const body = [...writeU32(count)];
    for (let i = 0; i < count; i++) {
      const flags = bytes[p++]!;
      if (flags & 0x04) throw new PlughostError('INVALID_MODULE', `core module ${name} uses memory64, which plughost does not run`);
      if (flags & 0x02) throw new PlughostError('INVALID_MODULE', `core module ${name} declares a shared memory, which plughost does not run`);
      if (flags & ~0x01) throw new PlughostError('INVALID_MODULE', `core module ${name} has unknown memory flags 0x${flags.toString(16)}`);
      let min: number;
      let max: number | undefined;
      [min, p] = readU32(bytes, p);
      if (flags & 1) [max, p] = readU32(bytes, p);
      if (min > maxPages) {
        throw new PlughostError('INVALID_MODULE', `core module ${name} needs ${min} pages of memory at start, more than its cap of ${maxPages} pages (${maxPages * WASM_PAGE} bytes)`);
      }
      body.push(0x01, ...writeU32(min), ...writeU32(max === undefined ? maxPages : Math.min(max, maxPages)));
    }
    parts.push(Uint8Array.from([5, ...writeU32(body.length), ...body]));
    pos = end;
  }
  return Buffer.concat(parts);
}

const VALTYPES: Record<number, string> = { 0x7f: 'i32', 0x7e: 'i64', 0x7d: 'f32', 0x7c: 'f64', 0x7b: 'v128', 0x70: 'funcref', 0x6f: 'externref' };

/**
 * The functions a core module imports from `module`, by name, with their core types
 * (undefined for a type this reader does not know).
 */
export function funcImports(bytes: Uint8Array, module: string): Map<string, { params: string[]; results: string[] } | undefined> {
  const types: ({ params: string[]; results: string[] } | undefined)[] = [];
  const out = new Map<string, { params: string[]; results: string[] } | undefined>();
  let pos = 8;
  while (pos < bytes.length) {
    const id = bytes[pos]!;
    const [size, start] = readU32(bytes, pos + 1);
    const end = start + size;
    if (id === 1) {
      let [count, p] = readU32(bytes, start);
      for (let i = 0; i < count && p < end; i++) {
        if (bytes[p++] !== 0x60) return out; // not a plain func type (GC proposal): leave it to the compiler
        const vec = (): string[] => {
          let n: number;
          [n, p] = readU32(bytes, p);
          return Array.from({ length: n }, () => VALTYPES[bytes[p++]!] ?? '?');
        };
        const params = vec();
        types.push({ params, results: vec() });
      }
    } else if (id === 2) {
      let [count, p] = readU32(bytes, start);
      for (let i = 0; i < count && p < end; i++) {
        let from: string;
        let name: string;
        [from, p] = readName(bytes, p);
        [name, p] = readName(bytes, p);
        const kind = bytes[p++]!;
        if (kind === 0x00 && from === module) out.set(name, types[readU32(bytes, p)[0]]);
        const next = skipImportType(bytes, p, kind);
        if (next === undefined) return out; // an import kind this reader does not know: the compiler judges the rest
        p = next;
      }
      return out;
    }
    pos = end;
  }
  return out;
}
