// A batch: many rows of one function, one outcome per row, in row order. Rows go to a
// worker in hand-offs (runRows in call.ts) and run back to back on one controller; a row
// that traps or runs past its limit costs its controller, and the rows after it go on in
// a new hand-off. With the guest's invoke-batch, one entry takes a hand-off's rows; an
// entry that traps or runs past its limit wrote nothing, and its rows go again one by one
// (so only the guilty row fails). A large batch that cannot write KV is split across
// workers, so one batch uses every core; a writing batch stays in one piece, its rows
// committed in order.
import { PlughostError, isPlughostError, messageOf } from '../errors.js';
import { rowCost, runCall, runRows, type CallServices, type RowOutcome } from './call.js';
import type { InvocationContext } from './context.js';
import type { Runtime } from './runtime.js';
import { STATUS } from './shared/wire.js';

/** Fewer rows than this per worker are not worth a hand-off of their own. */
export const MIN_ROWS_PER_SPLIT = 64;

export async function runBatch(rt: Runtime, services: CallServices, ctx: InvocationContext, name: string | undefined, rows: readonly Uint8Array[]): Promise<RowOutcome[]> {
  const out = new Array<RowOutcome>(rows.length);
  if (rows.length === 0) return out;
  const entry = rt.component.exports.has('invokeBatch');
  // asked once, before the rows: a function that says it does not write runs as a reader
  if (ctx.kvAccess === 'write' && rt.writesKv && rt.knownWriteable(name) === undefined && rt.component.exports.has('functionWriteable')) {
    const w = await runCall(rt, services, { ...ctx, kvAccess: 'none' }, { fn: 'functionWriteable', name });
    rt.rememberWriteable(name, w.status === STATUS.OK && w.value === true);
  }
  const writer = ctx.kvAccess === 'write' && rt.writesKv && services.store !== undefined && rt.knownWriteable(name) !== false;
  // rows that run other modules may write their scopes, whose locks a hand-off holds to its end: not split either
  const parts = writer || rt.callsRun ? 1 : Math.max(1, Math.min(services.workerCount, rt.poolSize, Math.floor(rows.length / MIN_ROWS_PER_SPLIT)));
  const size = Math.ceil(rows.length / parts);
  const runs: Promise<void>[] = [];
  for (let from = 0; from < rows.length; from += size) {
    const todo = Array.from({ length: Math.min(size, rows.length - from) }, (_, i) => from + i);
    // a split batch writes nothing: whoever sends its results holds them to a response
    runs.push(runPart(rt, services, ctx, { name, rows, entry, todo, out, resultBudget: parts === 1 ? ctx.maxResultBytes : undefined }));
  }
  await Promise.all(runs);
  return out;
}

interface Part {
  name: string | undefined;
  rows: readonly Uint8Array[];
  entry: boolean;
  /** Indexes of the rows still to run, in order. */
  todo: number[];
  out: RowOutcome[];
  resultBudget: number | undefined;
}

/** Runs the rows of one part in hand-offs until each has an outcome. */
async function runPart(rt: Runtime, services: CallServices, ctx: InvocationContext, part: Part): Promise<void> {
  let todo = part.todo;
  let budget = part.resultBudget;
  while (todo.length > 0) {
    const sent = todo;
    let r;
    try {
      r = await runRows(rt, services, ctx, { fn: 'invokeRows', name: part.name, rows: sent.map((i) => part.rows[i]!), entry: part.entry, resultBudget: budget, batchRows: sent });
    } catch (e) {
      // nothing of these rows ran (no controller, deadline, cancelled, a controller that cannot start)
      const failure = isPlughostError(e) ? e : new PlughostError('INTERNAL', messageOf(e), { cause: e });
      for (const i of sent) part.out[i] = { ok: false, failure };
      return;
    }
    if (r.entryFailed) {
      // which row did it? each runs on its own from here, and only that one fails
      part.entry = false;
      continue;
    }
    const reserve = ctx.resultRowReserve ?? 0;
    r.done.forEach((o, j) => {
      part.out[sent[j]!] = o;
      if (budget !== undefined) budget -= rowCost(o, reserve);
    });
    let rest = sent.slice(r.done.length);
    if (r.failed) {
      const i = sent[r.failed.index]!;
      part.out[i] = { ok: false, failure: r.failed.error };
      if (budget !== undefined) budget -= rowCost(part.out[i]!, reserve);
      rest = rest.filter((j) => j !== i);
    }
    if (r.rest || (r.done.length === 0 && !r.failed)) {
      const failure = r.rest ?? new PlughostError('INTERNAL', 'a hand-off of rows came back with none of them done');
      for (const i of rest) part.out[i] = { ok: false, failure };
      return;
    }
    todo = rest;
  }
}
