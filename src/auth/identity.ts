// Who a caller is and what it may do, as a token grants it. The guest never sees this:
// only the tenant (its KV scope) and the KV access reach the runtime.
import picomatch from 'picomatch';
import type { KvAccess } from '../kv/types.js';

export interface Grant {
  /** Who the token belongs to (logs, never the guest). */
  subject: string;
  /** Whose KV scope its calls use. */
  tenant: string;
  /** May push and delete modules. */
  admin: boolean;
  /** Module names it may invoke: globs such as `*`, `text-*`. */
  modules: string[];
  kv: KvAccess;
}

export class Identity {
  private readonly mayInvokeName: (name: string) => boolean;

  constructor(readonly grant: Grant) {
    const matchers = grant.modules.map((p) => picomatch(p));
    this.mayInvokeName = (name) => matchers.some((m) => m(name));
  }

  get subject(): string {
    return this.grant.subject;
  }

  mayInvoke(moduleName: string): boolean {
    return this.mayInvokeName(moduleName);
  }
}
