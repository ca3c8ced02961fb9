// `plughost stream --serve-sql <file>`: the CLI plays an engine that answers its guests' sql
// from a JSON file of rules, so the protocol can be tried (and the README's example run)
// without writing an engine. The file is read and validated once (zod), before the stream opens.
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { PlughostError } from '../errors.js';

const ruleSchema = z
  .strictObject({
    /** The query text, exactly as the guest sends it. */
    query: z.string(),
    /** When given: the call's vars must be a JSON object holding each of these fields with this value. */
    vars: z.record(z.string(), z.unknown()).optional(),
    /** The answer, sent as its JSON text. */
    value: z.unknown().optional(),
    /** Or an error, which the guest's sql returns as err. */
    error: z.string().optional(),
  })
  .refine((r) => (r.value === undefined) !== (r.error === undefined), { message: 'give "value" or "error", one of them' });

/** The engine's side of one host call: the answer's bytes, or an error string. */
export type SqlReply = { ok: Uint8Array } | { error: string };

export type SqlAnswerer = (query: string, vars: Uint8Array) => SqlReply;

/** Reads `[{"query": ..., "vars"?: {...}, "value" | "error": ...}, ...]`; the first rule that matches answers. */
export function loadAnswers(file: string): SqlAnswerer {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `--serve-sql ${file}: ${(e as Error).message}`);
  }
  const parsed = z.array(ruleSchema).safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    throw new PlughostError('INVALID_ARGUMENT', `--serve-sql ${file}: ${first.path.join('.') || '(top)'}: ${first.message} (expected an array of {"query", "vars"?, "value" or "error"})`);
  }
  const rules = parsed.data;
  return (query, varsBytes) => {
    const vars = jsonObject(varsBytes);
    const rule = rules.find((r) => r.query === query && (!r.vars || (vars && Object.entries(r.vars).every(([k, v]) => isDeepStrictEqual(vars[k], v)))));
    if (!rule) return { error: `no answer in ${file} for ${JSON.stringify(query)} with vars ${Buffer.from(varsBytes).toString('utf8')}` };
    return rule.error !== undefined ? { error: rule.error } : { ok: new TextEncoder().encode(JSON.stringify(rule.value)) };
  };
}

function jsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
