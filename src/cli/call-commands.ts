// invoke and stream: the PluginService from the command line.
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { FailureKind } from '../../gen/plughost/v1/outcome_pb.js';
import type { StreamRequest } from '../../gen/plughost/v1/plugin_pb.js';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StreamRequestSchema } from '../../gen/plughost/v1/plugin_pb.js';
import { PlughostError } from '../errors.js';
import type { Connection } from './client.js';
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

/** Streams NDJSON items from `input` and writes one NDJSON result per item to `output`; returns counts. */
export async function stream(
  c: Connection,
  o: { module: string; fn?: string; window?: number; ordered: boolean },
  input: Readable,
  output: Writable,
  onBadLine: (message: string) => void,
): Promise<{ sent: number; answered: number; failed: number; badLines: number }> {
  let sent = 0;
  let badLines = 0;
  async function* items(): AsyncGenerator<Item> {
    yield { kind: { case: 'options', value: { module: o.module, function: o.fn, window: o.window ?? 0, ordered: o.ordered } } };
    let lineNo = 0;
    for await (const line of createInterface({ input, crlfDelay: Infinity })) {
      lineNo++;
      if (line.trim() === '') continue;
      try {
        const item = parseItemLine(line, lineNo);
        sent++;
        yield item;
      } catch (e) {
        badLines++;
        onBadLine((e as Error).message);
      }
    }
  }
  let answered = 0;
  let failed = 0;
  for await (const r of c.plugins.stream(items() as AsyncIterable<StreamRequest>, { ...c.callOptions })) {
    answered++;
    const res = r.outcome?.result;
    const line: Record<string, unknown> = { id: Number(r.id) };
    if (res?.case === 'value') Object.assign(line, bytesField(res.value));
    else if (res?.case === 'guestError') line.guest_error = res.value;
    else {
      failed++;
      const f = res?.case === 'failure' ? res.value : undefined;
      line.failure = FailureKind[f?.kind ?? FailureKind.UNSPECIFIED];
      line.message = f?.message ?? 'no outcome';
    }
    if (!output.write(`${JSON.stringify(line)}\n`)) await new Promise((resolve) => output.once('drain', resolve));
  }
  return { sent, answered, failed, badLines };
}
