// How much jco's glue may lift out of a guest's memory in one go. Lifting copies: a list of a
// million entries that all point at the same 1 MiB string is 12 MiB of guest memory and a
// terabyte of JavaScript strings. Nothing in the canonical ABI forbids the aliasing, so the
// glue (patched in load.ts) counts what it copies, and throws before a copy would take the
// count past the budget: the call fails fast with MEMORY_LIMIT instead of running its worker
// out of heap or into its time limit. The worker (worker/guard.ts) resets the count when a
// call starts and around each host call, so the budget holds for each single lift: a host
// call's arguments, or a guest export's result.

/** Where the worker keeps the budget the glue reads (the glue runs in the worker's realm). */
export const LIFT_BUDGET_KEY = 'plughost.lift';

export interface LiftBudget {
  /** Bytes counted since the last reset. */
  used: number;
  /** The most a single lift may count. */
  limit: number;
  /** The module's memory cap: a list bigger than that cannot be in its memory (the canonical ABI traps). */
  memoryBytes: number;
}

/** How a budget overrun's message starts (worker/classify.ts reports it as MEMORY_LIMIT). */
export const LIFT_LIMIT_MESSAGE = 'the guest made the host lift more than';

/** What each element of a list counts beyond its bytes in guest memory: its JavaScript value's slot and header. */
export const LIST_ELEMENT_OVERHEAD = 16;

const MiB = 1 << 20;

/**
 * The budget of one lift: four times the module's memory cap (more than any value that is
 * really in that memory, with its JavaScript overhead), at least 16 MiB, and at most a
 * quarter of the worker's heap, so one lift cannot exhaust it.
 */
export function liftLimit(maxMemoryBytes: number, heapLimitBytes: number): number {
  return Math.min(Math.max(4 * maxMemoryBytes, 16 * MiB), Math.floor(heapLimitBytes / 4));
}

/**
 * Glue source, evaluated with it: the counting. `__budgeted` wraps the glue's string decoders,
 * `__liftArray` replaces its typed-array copies (a view first, so a list out of bounds still
 * traps), `__liftList` precedes each loop that lifts a list element by element.
 */
export const LIFT_GUARDS = `const __lift = globalThis[Symbol.for(${JSON.stringify(LIFT_BUDGET_KEY)})] ?? { used: 0, limit: Infinity, memoryBytes: Infinity };
function __charge(n) {
  __lift.used += n;
  if (__lift.used > __lift.limit) throw new RangeError(${JSON.stringify(LIFT_LIMIT_MESSAGE)} + ' ' + __lift.limit + ' bytes out of its memory at once (' + __lift.used + ' so far): a list or string far larger than its memory, the same bytes referenced again and again');
}
function __budgeted(decoder) {
  return { decode: (bytes) => { __charge(bytes.byteLength); return decoder.decode(bytes); } };
}
function __liftArray(Type, memory, ptr, len) {
  const view = new Type(memory.buffer, ptr, len);
  __charge(view.byteLength);
  return view.slice();
}
function __liftList(len, size) {
  len >>>= 0; // a core i32: a length past 2 GiB arrives negative
  if (len * size > __lift.memoryBytes) throw new WebAssembly.RuntimeError('a list of ' + len + ' elements of ' + size + ' bytes does not fit in the guest memory');
  __charge(len * (size + ${LIST_ELEMENT_OVERHEAD}));
}`;
