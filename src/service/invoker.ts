// One call of a plugin on behalf of an authenticated caller: resolve the module, check
// the caller may invoke it, check the function exists (when the module says which do),
// build the per-call context, run it. Shared by Invoke and every item of a Stream.
import type { Identity } from '../auth/identity.js';
import { PlughostError, type ErrorCode } from '../errors.js';
import type { ModuleRegistry } from '../registry/registry.js';
import type { InvokeResult } from '../runtime/runtime.js';
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
      const err = asPlughostError(e);
      outcome = err.code;
      const level = GUEST_FAILURES.has(err.code) ? (err.code === 'INTERNAL' ? 'error' : 'warn') : 'info';
      this.observers.logger?.[level]({ reqId: req.requestId, subject: identity.subject, module: req.module, fn: req.fn, code: err.code, err: err.message }, 'call failed');
      throw e;
    } finally {
      const seconds = (performance.now() - t0) / 1000;
      const m = this.observers.metrics;
      if (m) {
        labels.function = m.functionLabel(labels.module, labels.function);
        m.calls.inc({ ...labels, outcome });
        m.latency.observe(labels, seconds);
      }
      // the hot path: build the line only when someone reads debug lines
      const logger = this.observers.logger;
      if (logger?.isLevelEnabled('debug')) logger.debug({ reqId: req.requestId, subject: identity.subject, module: req.module, fn: req.fn, outcome, ms: seconds * 1000 }, 'call');
    }
  }

  private async call(identity: Identity, req: CallRequest, labels: { module: string; function: string }): Promise<{ result: InvokeResult; hash: string }> {
    const resolved = this.registry.resolve(req.module);
    labels.module = resolved.name;
    if (!identity.mayInvoke(resolved.name)) {
      throw new PlughostError('PERMISSION_DENIED', `${identity.subject} may not invoke ${resolved.name} (its token allows ${identity.grant.modules.join(', ') || 'no modules'})`);
    }
    const runtime = await this.registry.runtime(resolved);
    if (runtime.component.exports.has('listFunctions')) {
      const functions = await runtime.describe({ deadline: req.deadline, signal: req.signal });
      if (!functions.some((f) => f.name === req.fn)) {
        labels.function = '(unknown)';
        const names = functions.map((f) => f.name ?? '(default)').join(', ');
        throw new PlughostError('NOT_FOUND', `${resolved.name} has no function ${req.fn ?? '(default)'}; it has: ${names}`);
      }
    }
    const result = await runtime.invoke(
      {
        subject: identity.subject,
        tenant: identity.grant.tenant,
        kvAccess: identity.grant.kv,
        moduleName: resolved.name,
        deadline: req.deadline,
        signal: req.signal,
        requestId: req.requestId,
        maxResultBytes: this.maxResultBytes,
      },
      req.fn,
      req.args,
    );
    return { result, hash: resolved.hash };
  }
}

/** A grpc-js deadline (Date, epoch ms, or Infinity for none) as epoch ms. */
export function deadlineOf(d: Date | number): number | undefined {
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}
