// One call of a plugin on behalf of an authenticated caller: resolve the module, check
// the caller may invoke it, check the function exists (when the module says which do),
// build the per-call context, run it. Shared by Invoke and every item of a Stream.
import type { Identity } from '../auth/identity.js';
import { PlughostError } from '../errors.js';
import type { ModuleRegistry } from '../registry/registry.js';
import type { InvokeResult } from '../runtime/runtime.js';

export interface CallRequest {
  module: string;
  fn: string | undefined;
  args: Uint8Array;
  /** Epoch ms, from the gRPC deadline. */
  deadline?: number;
  signal?: AbortSignal;
  requestId?: string;
}

export class Invoker {
  constructor(private readonly registry: ModuleRegistry) {}

  async invoke(identity: Identity, req: CallRequest): Promise<{ result: InvokeResult; hash: string }> {
    const resolved = this.registry.resolve(req.module);
    if (!identity.mayInvoke(resolved.name)) {
      throw new PlughostError('PERMISSION_DENIED', `${identity.subject} may not invoke ${resolved.name} (its token allows ${identity.grant.modules.join(', ') || 'no modules'})`);
    }
    const runtime = await this.registry.runtime(resolved);
    if (runtime.component.exports.has('listFunctions')) {
      const functions = await runtime.describe({ deadline: req.deadline, signal: req.signal });
      if (!functions.some((f) => f.name === req.fn)) {
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
