import type { ExecutionContext } from 'ava';
import { RuntimeManager, type RuntimeManagerOptions } from '../../src/runtime/manager.js';
import type { InvocationContext } from '../../src/runtime/context.js';

/** A RuntimeManager closed when the test ends. */
export async function manager(t: ExecutionContext, options: RuntimeManagerOptions = {}): Promise<RuntimeManager> {
  const m = await RuntimeManager.create({ workers: 2, ...options });
  t.teardown(() => m.close());
  return m;
}

export function ctx(overrides: Partial<InvocationContext> = {}): InvocationContext {
  return { subject: 'tester', tenant: 'tenant-a', kvAccess: 'write', ...overrides };
}

export const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
export const readU32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true);
export const none = new Uint8Array();

export function valueOf(r: { ok: true; value: Uint8Array } | { ok: false; guestError: string }): Uint8Array {
  if (!r.ok) throw new Error(`guest error: ${r.guestError}`);
  return r.value;
}
