// The canonical-ABI layouts the kv-batch guest passes to the host and gets back (see
// test/fixtures/kv-batch.wat): the test lays out the import arguments and decodes the
// memory the host wrote, so a batch or range op is checked as the guest sees it.
const enc = new TextEncoder();
const dec = new TextDecoder();

type Bytes = Uint8Array | string;
const bytes = (b: Bytes) => (typeof b === 'string' ? enc.encode(b) : b);

/** [u32 items][u32 pairs][pairs x (offset, len)][data], offsets relative to the args. */
function pairs(items: number, parts: Bytes[]): Uint8Array {
  const head = 8 + parts.length * 8;
  const data = parts.map(bytes);
  const out = new Uint8Array(head + data.reduce((n, d) => n + d.length, 0));
  const v = new DataView(out.buffer);
  v.setUint32(0, items, true);
  v.setUint32(4, parts.length, true);
  let at = head;
  data.forEach((d, i) => {
    v.setUint32(8 + i * 8, at, true);
    v.setUint32(12 + i * 8, d.length, true);
    out.set(d, at);
    at += d.length;
  });
  return out;
}

export const keyList = (keys: string[]) => pairs(keys.length, keys);
export const entryList = (entries: [string, Bytes][]) => pairs(entries.length, entries.flat());

export interface Range {
  start?: string;
  end?: string;
  limit?: number;
  reverse?: boolean;
}

/** The 9 flat i32 of a key-range, then the key bytes. */
export function keyRange(r: Range): Uint8Array {
  const s = enc.encode(r.start ?? '');
  const e = enc.encode(r.end ?? '');
  const out = new Uint8Array(36 + s.length + e.length);
  const v = new DataView(out.buffer);
  const words = [r.start !== undefined ? 1 : 0, 36, s.length, r.end !== undefined ? 1 : 0, 36 + s.length, e.length,
    r.limit !== undefined ? 1 : 0, r.limit ?? 0, r.reverse ? 1 : 0];
  words.forEach((w, i) => v.setUint32(i * 4, w, true));
  out.set(s, 36);
  out.set(e, 36 + s.length);
  return out;
}

/** Reads the guest's dump: memory from BASE (the import return area) to its heap top. */
class Dump {
  static readonly BASE = 65520;
  private readonly v: DataView;
  constructor(private readonly b: Uint8Array) {
    this.v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  u8 = (addr: number) => this.v.getUint8(addr - Dump.BASE);
  u32 = (addr: number) => this.v.getUint32(addr - Dump.BASE, true);
  u64 = (addr: number) => this.v.getBigUint64(addr - Dump.BASE, true);
  raw = (ptr: number, len: number) => this.b.slice(ptr - Dump.BASE, ptr - Dump.BASE + len);
  str = (at: number) => dec.decode(this.raw(this.u32(at), this.u32(at + 4)));
  /** the elements of the list whose (ptr, len) is at `at`, each `size` bytes */
  list<T>(at: number, size: number, item: (addr: number) => T): T[] {
    const ptr = this.u32(at);
    return Array.from({ length: this.u32(at + 4) }, (_, i) => item(ptr + i * size));
  }
}

export type Result<T> = { ok: T } | { err: string };

/** result<list<T>, string> or result<_, string>: payload at offset 4 */
function listResult<T>(b: Uint8Array, size: number, item: (d: Dump, addr: number) => T): Result<T[]> {
  const d = new Dump(b);
  const at = Dump.BASE;
  if (d.u8(at) === 1) return { err: d.str(at + 4) };
  return { ok: d.list(at + 4, size, (a) => item(d, a)) };
}

export const unitResult = (b: Uint8Array): Result<null> => {
  const d = new Dump(b);
  return d.u8(Dump.BASE) === 1 ? { err: d.str(Dump.BASE + 4) } : { ok: null };
};

/** result<u64, string>: payload at offset 8 (u64 alignment) */
export const countResult = (b: Uint8Array): Result<number> => {
  const d = new Dump(b);
  return d.u8(Dump.BASE) === 1 ? { err: d.str(Dump.BASE + 8) } : { ok: Number(d.u64(Dump.BASE + 8)) };
};

export const valuesResult = (b: Uint8Array) =>
  listResult(b, 12, (d, a) => (d.u8(a) === 1 ? dec.decode(d.raw(d.u32(a + 4), d.u32(a + 8))) : null));
export const keysResult = (b: Uint8Array) => listResult(b, 8, (d, a) => d.str(a));
export const entriesResult = (b: Uint8Array) =>
  listResult(b, 16, (d, a): [string, string] => [d.str(a), d.str(a + 8)]);
