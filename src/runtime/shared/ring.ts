// A single-producer, single-consumer ring of variable-length records in a
// SharedArrayBuffer: one per direction per worker. The producer writes a record's bytes
// once, in place, and publishes it by moving `write`; the consumer reads it in place and
// frees it by moving `read`. Nobody is woken for a record unless the consumer said it is
// going to sleep (`sleeping`), so a busy consumer takes record after record with no
// wake-up at all. Both threads load it.

const WRITE = 0; // bytes ever published (wraps at 2^32)
const READ = 16; // bytes ever consumed; on its own cache line
const SLEEPING = 32; // the consumer is waiting, or about to wait, on WRITE
const HEADER_BYTES = 192;
/** A record length that means "the rest of the buffer is unused; go on at offset 0". */
const WRAP = 0xffffffff;

const align = (n: number) => (n + 7) & ~7;

/** Atomics.waitAsync is in Node 16+; TypeScript's lib has it only from es2024. */
type WaitAsync = (a: Int32Array, i: number, v: number, t?: number) => { async: boolean; value: Promise<string> };

export class Ring {
  readonly header: Int32Array;
  readonly capacity: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly mask: number;
  /** Producer's copy of WRITE, consumer's copy of READ. */
  writePos: number;
  readPos: number;
  /** Where `publish()` moves WRITE to: the end of the record `reserve()` made room for. */
  private pendingNext = 0;

  /** @param sab from `Ring.allocate` */
  constructor(readonly sab: SharedArrayBuffer) {
    this.header = new Int32Array(sab, 0, HEADER_BYTES / 4);
    this.capacity = sab.byteLength - HEADER_BYTES;
    this.bytes = new Uint8Array(sab, HEADER_BYTES, this.capacity);
    this.view = new DataView(sab, HEADER_BYTES, this.capacity);
    this.mask = this.capacity - 1;
    this.writePos = Atomics.load(this.header, WRITE) >>> 0;
    this.readPos = Atomics.load(this.header, READ) >>> 0;
  }

  /** @param capacity bytes of records, a power of two */
  static allocate(capacity: number): SharedArrayBuffer {
    if (capacity < 1024 || (capacity & (capacity - 1)) !== 0) throw new Error(`ring capacity must be a power of two >= 1024, got ${capacity}`);
    return new SharedArrayBuffer(HEADER_BYTES + capacity);
  }

  /** The largest record payload that fits (bigger ones travel by postMessage). */
  get maxRecord(): number {
    return this.capacity / 4 - 8;
  }

  // --- producer ---

  /**
   * Reserves room for a record of `length` payload bytes; returns the payload's offset in
   * `bytes`/`view`, or -1 when the ring is too full now. Call `publish()` after writing.
   */
  reserve(length: number): number {
    const need = 8 + align(length);
    const free = this.capacity - ((this.writePos - (Atomics.load(this.header, READ) >>> 0)) >>> 0);
    let at = this.writePos & this.mask;
    const tail = this.capacity - at;
    if (need > tail) {
      // not contiguous: mark the tail unused and start over at 0
      if (free < tail + need) return -1;
      this.view.setUint32(at, WRAP, true);
      this.writePos = (this.writePos + tail) >>> 0;
      at = 0;
    } else if (free < need) {
      return -1;
    }
    this.view.setUint32(at, length, true);
    this.pendingNext = (this.writePos + need) >>> 0;
    return at + 8;
  }

  /** Makes the reserved record visible; returns true when the consumer must be woken. */
  publish(): boolean {
    this.writePos = this.pendingNext;
    Atomics.store(this.header, WRITE, this.writePos | 0);
    return Atomics.load(this.header, SLEEPING) === 1;
  }

  /** Bytes of records the consumer has not freed yet (producer side). */
  get used(): number {
    return (this.writePos - (Atomics.load(this.header, READ) >>> 0)) >>> 0;
  }

  /** Wakes a sleeping consumer. */
  wake(): void {
    Atomics.store(this.header, SLEEPING, 0);
    Atomics.notify(this.header, WRITE);
  }

  // --- consumer ---

  /** Offset of the next record's payload, or -1 when there is none. Its length is `length(at)`. */
  peek(): number {
    for (;;) {
      if ((Atomics.load(this.header, WRITE) >>> 0) === this.readPos) return -1;
      const at = this.readPos & this.mask;
      const length = this.view.getUint32(at, true);
      if (length !== WRAP) return at + 8;
      this.readPos = (this.readPos + (this.capacity - at)) >>> 0;
    }
  }

  length(payloadAt: number): number {
    return this.view.getUint32(payloadAt - 8, true);
  }

  /** Frees the record returned by the last `peek()`. */
  consume(payloadAt: number): void {
    this.readPos = (this.readPos + 8 + align(this.length(payloadAt))) >>> 0;
    Atomics.store(this.header, READ, this.readPos | 0);
  }

  /** Whether a record is waiting. */
  get ready(): boolean {
    return (Atomics.load(this.header, WRITE) >>> 0) !== this.readPos;
  }

  /**
   * Waits, without blocking the thread, until a record is published (or `timeoutMs`).
   * Resolves at once if one is there already. Returns undefined when a record is ready now.
   */
  waitAsync(timeoutMs?: number): Promise<unknown> | undefined {
    Atomics.store(this.header, SLEEPING, 1);
    const seen = this.readPos | 0;
    if ((Atomics.load(this.header, WRITE) | 0) !== seen) {
      Atomics.store(this.header, SLEEPING, 0);
      return undefined;
    }
    const r = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync(this.header, WRITE, seen, timeoutMs);
    if (!r.async) {
      Atomics.store(this.header, SLEEPING, 0);
      return undefined;
    }
    return r.value.then((v) => {
      Atomics.store(this.header, SLEEPING, 0);
      return v;
    });
  }

  /**
   * Blocks this thread until a record is published or `timeoutMs` passes (workers only:
   * the main thread never blocks). A futex wait: its wake-up is never lost.
   */
  waitSync(timeoutMs: number): void {
    Atomics.store(this.header, SLEEPING, 1);
    const seen = this.readPos | 0;
    if ((Atomics.load(this.header, WRITE) | 0) === seen) Atomics.wait(this.header, WRITE, seen, timeoutMs);
    Atomics.store(this.header, SLEEPING, 0);
  }

  /** Producer side: waits until the consumer frees space (workers only). */
  waitForSpace(timeoutMs: number): void {
    const seen = Atomics.load(this.header, READ);
    Atomics.wait(this.header, READ, seen, timeoutMs);
  }
}
