// One call of a plugin on behalf of an authenticated caller: resolve the module, check
// the caller may invoke it, check the function exists (when the module says which do),
// build the per-call context, run it. Shared by Invoke and every item of a Stream.
import type { Identity } from '../auth/identity.js';
import { PlughostError, type ErrorCode } from '../errors.js';
import type { ModuleRegistry } from '../registry/registry.js';
import type { InvocationContext, SqlAnswer, SqlRequest } from '../runtime/context.js';
import type { RunTarget } from '../runtime/nested.js';
import type { InvokeResult, RowOutcome, Runtime } from '../runtime/runtime.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { asPlughostError } from './status.js';

export interface CallRequest {
  module: string;
  fn: string | undefined;
  args: Uint8Array;
  /** Epoch ms, from the gRPC deadline. */
  deadline?: number;
  signal?: AbortSignal;
  requestId?: string;
  /** Told the module's hash once it is resolved and the caller may invoke it (a Stream reports it with a failure too). */
  onResolved?: (hash: string) => void;
  /** Answers the guest's `sql` (a Stream whose engine serves it); absent: `sql` returns err. */
  sql?: (request: SqlRequest) => Promise<SqlAnswer>;
}

export interface BatchRequest {
  module: string;
  fn: string | undefined;
  rows: readonly Uint8Array[];
  /** What the rows' results may take of their one response, and what to hold back for each row still to come (InvocationContext). */
  resultBudget?: { bytes: number; rowReserve: number };
  /** Epoch ms: the stream's deadline, or the batch's own when sooner. */
  deadline?: number;
  signal?: AbortSignal;
  requestId?: string;
  onResolved?: (hash: string) => void;
  /** Answers the guest's `sql`; `request.row` says which row asked. */
  sql?: (request: SqlRequest) => Promise<SqlAnswer>;
}

export interface InvokerObservers {
  metrics?: Metrics;
  logger?: Logger;
}

/** Failures that say something about the guest or the server, logged at warn; the rest are the caller's. */
const GUEST_FAILURES = new Set<ErrorCode>(['TRAP', 'TIMEOUT', 'MEMORY_LIMIT', 'INIT_FAILED', 'POOL_EXHAUSTED', 'INTERNAL']);

/**
 * Room an Invoke or Stream response needs besides the result bytes, so a result may take
 * the rest of grpc.maxSendMessageBytes: an InvokeResponse adds at most 79 bytes (the value's
 * tag and length, and a 71-character module hash with its own), a StreamResponse at most 23
 * (the id, the outcome's and the value's tags and lengths).
 */
export const RESPONSE_ENVELOPE_BYTES = 128;

export class Invoker {
  constructor(
    private readonly registry: ModuleRegistry,
    private readonly observers: InvokerObservers = {},
    /** The largest result a response can carry; a bigger one fails the call before it commits. */
    private readonly maxResultBytes?: number,
  ) {}

  /** One call, counted and timed by module, function and outcome, with one log line. */
  async invoke(identity: Identity, req: CallRequest): Promise<{ result: InvokeResult; hash: string }> {
    const t0 = performance.now();
    const labels = { module: '(unresolved)', function: (req.fn ?? '(default)').slice(0, 64) };
    let outcome = 'INTERNAL';
    try {
      const r = await this.call(identity, req, labels);
      outcome = r.result.ok ? 'ok' : 'guest_error';
      return r;
    } catch (e) {
      outcome = this.failed(identity, req, e, 'call failed');
      throw e;
    } finally {
      const seconds = this.observe(labels, [[outcome, 1]], t0);
      // the hot path: build the line only when someone reads debug lines
      const logger = this.observers.logger;
      if (logger?.isLevelEnabled('debug')) logger.debug({ reqId: req.requestId, subject: identity.subject, module: req.module, fn: req.fn, outcome, ms: seconds * 1000 }, 'call');
    }
  }

  /**
   * Many rows of one function: the module is resolved, permitted and checked once, then
   * each row runs as its own call. Throws only when the batch as a whole is refused (then
   * no row ran); a row's failure is in its outcome. Counted per row, one log line per batch.
   */
  async invokeBatch(identity: Identity, req: BatchRequest): Promise<{ outcomes: RowOutcome[]; hash: string }> {
    const t0 = performance.now();
    const labels = { module: '(unresolved)', function: (req.fn ?? '(default)').slice(0, 64) };
    const counts = new Map<string, number>();
    try {
      const { runtime, hash, name } = await this.prepare(identity, req, labels);
      const ctx = this.contextOf(identity, name, req);
      if (req.resultBudget) Object.assign(ctx, { maxResultBytes: req.resultBudget.bytes, resultRowReserve: req.resultBudget.rowReserve });
      const outcomes = await runtime.invokeBatch(ctx, req.fn, req.rows);
      for (const o of outcomes) {
        const outcome = o.ok ? 'ok' : 'failure' in o ? o.failure.code : 'guest_error';
        counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
      }
      return { outcomes, hash };
    } catch (e) {
      counts.set(this.failed(identity, req, e, 'batch refused', { rows: req.rows.length }), req.rows.length);
      throw e;
    } finally {
      const seconds = this.observe(labels, counts, t0);
      const logger = this.observers.logger;
      if (logger?.isLevelEnabled('debug')) logger.debug({ reqId: req.requestId, subject: identity.subject, module: req.module, fn: req.fn, rows: req.rows.length, outcomes: Object.fromEntries(counts), ms: seconds * 1000 }, 'batch');
    }
  }

  /** Logs a call or batch that did not complete (at warn when it says something about the guest or the server); returns its code. */
  private failed(identity: Identity, req: { requestId?: string; module: string; fn: string | undefined }, e: unknown, what: string, extra: object = {}): string {
    const err = asPlughostError(e);
    const level = GUEST_FAILURES.has(err.code) ? (err.code === 'INTERNAL' ? 'error' : 'warn') : 'info';
    this.observers.logger?.[level]({ reqId: req.requestId, subject: identity.subject, module: req.module, fn: req.fn, ...extra, code: err.code, err: err.message }, what);
    return err.code;
  }

  /**
   * A guest's `run(module, function, ...)` under the identity of the caller whose call made
   * it: the same resolution and permission check as an Invoke of it. Counted like a call.
   */
  private async runTarget(identity: Identity, ref: string, fn: string | undefined): Promise<RunTarget> {
    const resolved = this.registry.resolve(ref);
    mayInvoke(identity, resolved.name);
    const runtime = await this.registry.runtime(resolved);
    const labels = { module: resolved.name, function: (fn ?? '(default)').slice(0, 64) };
    return {
      runtime,
      moduleName: resolved.name,
      kvAccess: identity.grant.kv,
      finished: (outcome, seconds) => void this.observe(labels, [[outcome, 1]], performance.now() - seconds * 1000),
    };
  }

  /** Counts outcomes (outcome, how many) and times the call or batch; returns its seconds. */
  private observe(labels: { module: string; function: string }, counts: Iterable<[string, number]>, t0: number): number {
    const seconds = (performance.now() - t0) / 1000;
    const m = this.observers.metrics;
    if (m) {
      labels.function = m.functionLabel(labels.module, labels.function);
      for (const [outcome, n] of counts) m.calls.inc({ ...labels, outcome }, n);
      m.latency.observe(labels, seconds);
    }
    return seconds;
  }

  private async call(identity: Identity, req: CallRequest, labels: { module: string; function: string }): Promise<{ result: InvokeResult; hash: string }> {
    const { runtime, hash, name } = await this.prepare(identity, req, labels);
    const result = await runtime.invoke(this.contextOf(identity, name, req), req.fn, req.args);
    return { result, hash };
  }

  /** Resolves the module, checks the caller may invoke it and that it has the function. */
  private async prepare(identity: Identity, req: Pick<CallRequest, 'module' | 'fn' | 'deadline' | 'signal' | 'onResolved'>, labels: { module: string; function: string }): Promise<{ runtime: Runtime; hash: string; name: string }> {
    const resolved = await this.registry.resolveLatest(req.module);
    labels.module = resolved.name;
    mayInvoke(identity, resolved.name);
    req.onResolved?.(resolved.hash);
    const runtime = await this.registry.runtime(resolved);
    if (runtime.component.exports.has('listFunctions')) {
      const functions = await runtime.describe({ deadline: req.deadline, signal: req.signal });
      if (!functions.some((f) => f.name === req.fn)) {
        labels.function = '(unknown)';
        const names = functions.map((f) => f.name ?? '(default)').join(', ');
        throw new PlughostError('NOT_FOUND', `${resolved.name} has no function ${req.fn ?? '(default)'}; it has: ${names}`);
      }
    }
    return { runtime, hash: resolved.hash, name: resolved.name };
  }

  private contextOf(identity: Identity, moduleName: string, req: Pick<CallRequest, 'deadline' | 'signal' | 'requestId' | 'sql'>): InvocationContext {
    return {
      resolveRun: (ref, fn) => this.runTarget(identity, ref, fn),
      sql: req.sql,
      subject: identity.subject,
      tenant: identity.grant.tenant,
      kvAccess: identity.grant.kv,
      moduleName,
      deadline: req.deadline,
      signal: req.signal,
      requestId: req.requestId,
      maxResultBytes: this.maxResultBytes,
    };
  }
}

/** Throws PERMISSION_DENIED unless the caller's token allows invoking the module. */
function mayInvoke(identity: Identity, moduleName: string): void {
  if (!identity.mayInvoke(moduleName)) {
    throw new PlughostError('PERMISSION_DENIED', `${identity.subject} may not invoke ${moduleName} (its token allows ${identity.grant.modules.join(', ') || 'no modules'})`);
  }
}

/** A grpc-js deadline (Date, epoch ms, or Infinity for none) as epoch ms. */
export function deadlineOf(d: Date | number): number | undefined {
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}
