// What an exception out of a guest call means. jco surfaces a guest's err(...) as the
// thrown string itself; traps as WebAssembly.RuntimeError; bad pointers and stack
// overflow as RangeError/TypeError. Only the guest's err leaves the controller usable.
import { LIFT_LIMIT_MESSAGE } from '../../component/lift-budget.js';

/** A trap with less than this much memory left under the cap is reported as the memory limit. */
export const MEMORY_LIMIT_MARGIN = 1 << 20;

export interface Failure {
  kind: 'guest' | 'trap' | 'memory';
  message: string;
}

export function classifyFailure(e: unknown, memory: WebAssembly.Memory | undefined, maxMemoryBytes: number): Failure {
  if (typeof e === 'string') return { kind: 'guest', message: e };
  const message = e instanceof WebAssembly.RuntimeError ? e.message : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  const used = memory?.buffer.byteLength ?? 0;
  if (e instanceof RangeError && e.message.startsWith(LIFT_LIMIT_MESSAGE)) return { kind: 'memory', message: e.message };
  if (e instanceof RangeError && /allocation failed|out of memory/i.test(e.message)) {
    return { kind: 'memory', message: `out of memory copying guest data: ${message}` };
  }
  if (e instanceof TypeError && /not valid for encoding utf-8/i.test(e.message)) {
    return { kind: 'trap', message: 'the guest passed a string that is not valid UTF-8 (a WIT string must be; nothing was done with it)' };
  }
  if (maxMemoryBytes > 0 && used + MEMORY_LIMIT_MARGIN > maxMemoryBytes && e instanceof WebAssembly.RuntimeError) {
    return { kind: 'memory', message: `guest hit its memory cap of ${maxMemoryBytes} bytes (${message})` };
  }
  return { kind: 'trap', message };
}
