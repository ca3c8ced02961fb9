// The batch load's messages by hand: its requests are the same rows every time (encoded
// once, with only `first_id` changing) and its answers are read only as far as checking
// them needs. With protobuf-es the load process, not the server it measures, was the
// limit: it encoded and decoded ~1,000 rows per message for each.
import type { CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';

function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

const lengthOf = (n: number) => varint(BigInt(n));

/** `StreamRequest { batch: { first_id, rows } }` for the same rows each time. */
export function batchRequestEncoder(rows: readonly Uint8Array[]): (firstId: bigint) => Buffer {
  // StreamBatch.rows = 5 (tag 0x2a); StreamRequest.batch = 3 (tag 0x1a); StreamBatch.first_id = 1 (tag 0x08)
  const body = Buffer.concat(rows.map((r) => Buffer.concat([Buffer.from([0x2a, ...lengthOf(r.length)]), r])));
  return (firstId) => {
    const id = firstId ? [0x08, ...varint(firstId)] : [];
    const inner = id.length + body.length;
    return Buffer.concat([Buffer.from([0x1a, ...lengthOf(inner), ...id]), body]);
  };
}

/** A protobuf reader over one buffer: fields of the message in [at, end). */
class Fields {
  constructor(
    readonly buf: Buffer,
    public at: number,
    readonly end: number,
  ) {}
  /** The next field's number and wire type, or undefined at the end. */
  next(): { no: number; type: number } | undefined {
    if (this.at >= this.end) return undefined;
    const key = this.varint();
    return { no: Number(key >> 3n), type: Number(key & 7n) };
  }
  varint(): bigint {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = this.buf[this.at++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
      shift += 7n;
    }
  }
  /** A length-delimited field's [start, end). */
  span(): [number, number] {
    const len = Number(this.varint());
    const start = this.at;
    this.at += len;
    return [start, this.at];
  }
  skip(type: number): void {
    if (type === 0) this.varint();
    else if (type === 2) this.span();
    else if (type === 1) this.at += 8;
    else if (type === 5) this.at += 4;
    else throw new Error(`wire type ${type} in a StreamResponse`);
  }
}

/** What a batch's answer says, as far as the load checks it. */
export interface BatchAnswer {
  id: bigint;
  /** Each row's result, in the shape protobuf-es would give. */
  outcomes: CallOutcome['result'][];
  failure?: string;
}

function outcomeOf(buf: Buffer, [start, end]: [number, number]): CallOutcome['result'] {
  const f = new Fields(buf, start, end);
  for (let k = f.next(); k; k = f.next()) {
    if (k.type !== 2) {
      f.skip(k.type);
      continue;
    }
    const [s, e] = f.span();
    if (k.no === 1) return { case: 'value', value: buf.subarray(s, e) };
    if (k.no === 2) return { case: 'guestError', value: buf.toString('utf8', s, e) };
    if (k.no === 3) return { case: 'failure', value: failureOf(buf, [s, e]) as never };
  }
  return { case: undefined };
}

function failureOf(buf: Buffer, [start, end]: [number, number]): { kind: number; message: string } {
  const f = new Fields(buf, start, end);
  const out = { kind: 0, message: '' };
  for (let k = f.next(); k; k = f.next()) {
    if (k.no === 1 && k.type === 0) out.kind = Number(f.varint());
    else if (k.no === 2 && k.type === 2) out.message = buf.toString('utf8', ...f.span());
    else f.skip(k.type);
  }
  return out;
}

/** Reads a StreamResponse that answers a batch. */
export function readBatchAnswer(buf: Buffer): BatchAnswer {
  const f = new Fields(buf, 0, buf.length);
  const out: BatchAnswer = { id: 0n, outcomes: [] };
  for (let k = f.next(); k; k = f.next()) {
    if (k.no === 1 && k.type === 0) out.id = f.varint();
    else if (k.no === 4 && k.type === 2) {
      const b = new Fields(buf, ...f.span());
      for (let j = b.next(); j; j = b.next()) {
        if (j.no === 3 && j.type === 2) out.outcomes.push(outcomeOf(buf, b.span()));
        else if (j.no === 4 && j.type === 2) out.failure = failureOf(buf, b.span()).message;
        else b.skip(j.type);
      }
    } else f.skip(k.type);
  }
  return out;
}
