// invoke and stream: the PluginService from the command line.
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { FailureKind, type CallFailure, type CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';
import type { StreamRequest, StreamResponse } from '../../gen/plughost/v1/plugin_pb.js';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StreamRequestSchema } from '../../gen/plughost/v1/plugin_pb.js';
import { PlughostError } from '../errors.js';
import type { Connection } from './client.js';
import { WINDOW_HEADER } from '../service/stream-session.js';
import { EngineSide } from './engine-side.js';
import type { SqlAnswerer } from './sql-answers.js';
import { bytesField, showBytes } from './values.js';

/** Calls one function; a guest error is an answer, reported with exit code 3. */
export async function invoke(c: Connection, module: string, fn: string | undefined, args: Uint8Array): Promise<{ out: string; guestError?: string }> {
  const r = await c.plugins.invoke({ module, function: fn, args }, c.callOptions);
  if (r.result.case === 'guestError') return { out: '', guestError: r.result.value };
  return { out: showBytes(r.result.value ?? new Uint8Array()) };
}

type Item = MessageInitShape<typeof StreamRequestSchema>;

/**
 * One line of NDJSON in: `{"id": 7, "args": <any JSON>}` (or `"args_base64"`, and optionally
 * `"fn"`/`"module"` for that item); `id` defaults to the line number. A line that is not
 * such an object is reported on stderr and skipped; the rest still run.
 */
export function parseItemLine(line: string, lineNo: number): Item {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `line ${lineNo}: not JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new PlughostError('INVALID_ARGUMENT', `line ${lineNo}: an item must be a JSON object such as {"id": 1, "args": {...}}`);
  const o = v as { id?: unknown; args?: unknown; args_base64?: unknown; fn?: unknown; module?: unknown };
  const id = o.id ?? lineNo;
  if (!(typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) && !(typeof id === 'string' && /^\d+$/.test(id))) {
    throw new PlughostError('INVALID_ARGUMENT', `line ${lineNo}: "id" must be a whole number >= 0`);
  }
  if (o.args !== undefined && o.args_base64 !== undefined) throw new PlughostError('INVALID_ARGUMENT', `line ${lineNo}: give "args" or "args_base64", not both`);
  if (o.args_base64 !== undefined && typeof o.args_base64 !== 'string') throw new PlughostError('INVALID_ARGUMENT', `line ${lineNo}: "args_base64" must be a string`);
  for (const k of ['fn', 'module'] as const) if (o[k] !== undefined && typeof o[k] !== 'string') throw new PlughostError('INVALID_ARGUMENT', `line ${lineNo}: "${k}" must be a string`);
  const args = o.args_base64 !== undefined ? Buffer.from(o.args_base64 as string, 'base64') : o.args === undefined ? new Uint8Array() : new TextEncoder().encode(JSON.stringify(o.args));
  return { kind: { case: 'item', value: { id: BigInt(id as number | string), args, module: (o.module as string) ?? '', function: o.fn as string | undefined } } };
}

/** The NDJSON line for one item's or row's outcome. */
function resultLine(id: bigint, o: CallOutcome | undefined): { line: Record<string, unknown>; failed: boolean } {
  const res = o?.result;
  const line: Record<string, unknown> = { id: Number(id) };
  if (res?.case === 'value') Object.assign(line, bytesField(res.value));
  else if (res?.case === 'guestError') line.guest_error = res.value;
  else return failureLine(id, res?.case === 'failure' ? res.value : undefined);
  return { line, failed: false };
}

function failureLine(id: bigint, f: CallFailure | undefined): { line: Record<string, unknown>; failed: true } {
  return { line: { id: Number(id), failure: FailureKind[f?.kind ?? FailureKind.UNSPECIFIED], code: f?.code ?? '', message: f?.message ?? 'no outcome' }, failed: true };
}

/** The NDJSON lines of one item's or batch's answer: one per item or row, with its id. */
function resultLines(r: StreamResponse, sentRows: Map<bigint, number[]>): { line: Record<string, unknown>; failed: boolean }[] {
  const b = r.batch;
  if (!b) return [resultLine(r.id, r.outcome)];
  let ids = b.ids;
  if (ids.length === 0) {
    const counts = sentRows.get(b.firstId) ?? [];
    const n = counts.shift() ?? b.outcomes.length;
    if (counts.length === 0) sentRows.delete(b.firstId);
    ids = Array.from({ length: n }, (_, i) => b.firstId + BigInt(i));
  }
  // a batch refused as a whole: each of its rows failed so
  return ids.map((id, i) => (b.failure ? failureLine(id, b.failure) : resultLine(id, b.outcomes[i])));
}

type Row = Extract<Item['kind'], { case: 'item' }>['value'];

/**
 * Items grouped into batches of up to `size` rows: consecutive items for the same module
 * and function share one, numbered from first_id when their ids follow on, else by ids.
 */
async function* batches(items: AsyncIterable<Row>, size: number, sentRows: Map<bigint, number[]>): AsyncGenerator<Item> {
  let rows: Row[] = [];
  const flush = (): Item => {
    const ids = rows.map((r) => BigInt(r.id!));
    const consecutive = ids.every((id, i) => id === ids[0]! + BigInt(i));
    // the answer to a batch numbered from first_id does not repeat its row count
    if (consecutive) sentRows.set(ids[0]!, [...(sentRows.get(ids[0]!) ?? []), rows.length]);
    const b = { firstId: ids[0]!, ids: consecutive ? [] : ids, module: rows[0]!.module, function: rows[0]!.function, rows: rows.map((r) => r.args!) };
    rows = [];
    return { kind: { case: 'batch', value: b } };
  };
  for await (const row of items) {
    if (rows.length > 0 && (rows.length === size || row.module !== rows[0]!.module || row.function !== rows[0]!.function)) yield flush();
    rows.push(row);
  }
  if (rows.length > 0) yield flush();
}

/**
 * Streams NDJSON items from `input` and writes one NDJSON result per item to `output`;
 * returns counts. With `batch`, up to that many consecutive items go in one message. With
 * `serveSql`, the CLI is the engine that answers its guests' sql (host calls): it keeps at
 * most the window's rows unanswered, so its answers never queue behind items the server is
 * not reading yet, and ends its side only once every item is answered.
 */
export async function stream(
  c: Connection,
  o: { module: string; fn?: string; window?: number; ordered: boolean; batch?: number; serveSql?: SqlAnswerer },
  input: Readable,
  output: Writable,
  onBadLine: (message: string) => void,
  onNotice: (message: string) => void = () => {},
): Promise<{ sent: number; answered: number; failed: number; badLines: number }> {
  let sent = 0;
  let badLines = 0;
  async function* items(): AsyncGenerator<Row> {
    let lineNo = 0;
    for await (const line of createInterface({ input, crlfDelay: Infinity })) {
      lineNo++;
      if (line.trim() === '') continue;
      let item: Item;
      try {
        item = parseItemLine(line, lineNo);
      } catch (e) {
        badLines++;
        onBadLine((e as Error).message);
        continue;
      }
      sent++;
      yield (item.kind as { value: Row }).value;
    }
  }
  const sentRows = new Map<bigint, number[]>();
  // with batches and no window asked for: room for four batches (the server lowers it to its cap)
  const window = o.window ?? (o.batch ? 4 * o.batch : 0);
  async function* requests(): AsyncGenerator<Item> {
    yield { kind: { case: 'options', value: { module: o.module, function: o.fn, window, ordered: o.ordered, serveSql: o.serveSql !== undefined } } };
    if (o.batch) yield* batches(items(), o.batch, sentRows);
    else for await (const value of items()) yield { kind: { case: 'item', value } };
  }
  const engine = o.serveSql ? new EngineSide(requests(), window) : undefined;
  let answered = 0;
  let failed = 0;
  const call = c.plugins.stream((engine?.requests ?? requests()) as AsyncIterable<StreamRequest>, { ...c.callOptions, onHeader: (h) => engine?.granted(Number(h.get(WINDOW_HEADER))) });
  try {
    for await (const r of call) {
      if (r.hostCall) {
        engine!.answer(r.hostCall.hostCallId, o.serveSql!(r.hostCall.query, r.hostCall.vars));
        continue;
      }
      if (r.hostAnswerRefused) {
        onNotice(r.hostAnswerRefused.message);
        continue;
      }
      const lines = resultLines(r, sentRows);
      engine?.answered(lines.length);
      for (const { line, failed: f } of lines) {
        answered++;
        if (f) failed++;
        if (!output.write(`${JSON.stringify(line)}\n`)) await new Promise((resolve) => output.once('drain', resolve));
      }
    }
  } finally {
    engine?.stop();
  }
  engine?.rethrow();
  return { sent, answered, failed, badLines };
}
