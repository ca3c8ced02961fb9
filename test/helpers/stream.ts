// Building PluginService.Stream requests and reading their answers in tests.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { FailureKind, type CallFailure, type CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';
import type { StreamRequestSchema, StreamResponse } from '../../gen/plughost/v1/plugin_pb.js';
import { RequestQueue } from '../../src/cli/request-queue.js';

export type Req = MessageInitShape<typeof StreamRequestSchema>;

export const options = (o: { module?: string; function?: string; window?: number; ordered?: boolean; serveSql?: boolean }): Req => ({ kind: { case: 'options', value: o } });

/** The engine's answer to host call `id`: result bytes, or an error string. */
export const answer = (id: bigint | number, a: { ok: Uint8Array } | { error: string } | Record<string, never>): Req => ({
  kind: { case: 'hostAnswer', value: { hostCallId: BigInt(id), result: 'ok' in a ? { case: 'ok', value: a.ok } : 'error' in a ? { case: 'error', value: a.error } : { case: undefined } } },
});

export const item = (id: number, i: { module?: string; function?: string; args?: Uint8Array; timeoutMs?: number } = {}): Req => ({ kind: { case: 'item', value: { id: BigInt(id), ...i } } });

export const batch = (b: { firstId?: number; ids?: number[]; module?: string; function?: string; rows: Uint8Array[]; timeoutMs?: number }): Req => ({
  kind: { case: 'batch', value: { ...b, firstId: BigInt(b.firstId ?? 0), ids: (b.ids ?? []).map(BigInt) } },
});

export async function* from(reqs: Req[]): AsyncGenerator<Req> {
  yield* reqs;
}

export async function collect(responses: AsyncIterable<StreamResponse>): Promise<StreamResponse[]> {
  const out: StreamResponse[] = [];
  for await (const r of responses) out.push(r);
  return out;
}

/** Requests written as the test goes (`send`, then `end`), for a client that reacts to answers. */
export class Feed extends RequestQueue<Req> {}

/** An outcome as short text: the value (UTF-8), `guest:<message>`, or `<FailureKind>/<code>`. */
export function describe(o: CallOutcome | undefined): string {
  const r = o?.result;
  if (r?.case === 'value') return new TextDecoder().decode(r.value);
  if (r?.case === 'guestError') return `guest:${r.value}`;
  if (r?.case === 'failure') return describeFailure(r.value);
  return '(none)';
}

/** A failure as `<FailureKind>/<code>`. */
export function describeFailure(f: CallFailure): string {
  return `${FailureKind[f.kind]}/${f.code}`;
}
