// What a worker does around its guests' calls so that a guest cannot make it copy more than
// its memory holds, or leave it holding far more heap than it started with:
// - the lift budget (component/lift-budget.ts) the patched glue counts against: reset when a
//   call starts and around each host call, so it holds for each single lift;
// - a host call whose batch has more items than maxBatchItems is answered err before its
//   list is lifted (the glue would lift every item first, each pointing wherever the guest
//   likes): its core import is wrapped, by its WIT name, and called with an empty list;
// - after each call, the worker's heap in use, for the main thread to recycle a worker whose
//   heap stays far above where it started (worker-host.ts).
import { getHeapStatistics } from 'node:v8';
import { workerData } from 'node:worker_threads';
import { HOST_INTERFACE } from '../../component/host-contract.js';
import { LIFT_BUDGET_KEY, liftLimit, type LiftBudget } from '../../component/lift-budget.js';
import { batchTooBig } from '../../kv/txn.js';
import type { KvLimits } from '../../kv/types.js';
import type { WorkerInit } from '../protocol.js';
import type { HostImports } from './bridge.js';

const budget: LiftBudget = { used: 0, limit: Infinity, memoryBytes: Infinity };
(globalThis as Record<symbol, unknown>)[Symbol.for(LIFT_BUDGET_KEY)] = budget;
const heapLimit = getHeapStatistics().heap_size_limit;

/** A call of a module with this memory cap starts: a fresh lift budget. */
export function beginCall(maxMemoryBytes: number): void {
  budget.used = 0;
  budget.limit = liftLimit(maxMemoryBytes, heapLimit);
  budget.memoryBytes = maxMemoryBytes;
}

/** The batch imports, by core (WIT) name and jco name; each takes its list as (ptr, len) first. */
const BATCHES: Record<string, string> = { 'kv-get-batch': 'kvGetBatch', 'kv-set-batch': 'kvSetBatch', 'kv-del-batch': 'kvDelBatch' };

/**
 * The guards of one controller: `host` wraps its jco host imports, `core` the imports of
 * each core module it instantiates. A batch over the limit reaches the glue as an empty
 * list, and its jco import answers the err the store would have, with the real count.
 */
export function importGuards(kvLimits: KvLimits) {
  let refused: string | undefined;
  return {
    host(imports: HostImports): HostImports {
      for (const name of Object.values(BATCHES)) {
        const f = imports[name];
        if (!f) continue;
        imports[name] = (...args: unknown[]) => (refused === undefined ? f(...args) : { tag: 'err', val: refused });
      }
      return imports;
    },
    core(imports: WebAssembly.Imports | undefined): WebAssembly.Imports | undefined {
      const host = imports?.[HOST_INTERFACE];
      if (!host) return imports;
      const wrapped: WebAssembly.ModuleImports = {};
      for (const [name, f] of Object.entries(host)) {
        if (typeof f !== 'function') {
          wrapped[name] = f;
          continue;
        }
        const batch = name in BATCHES;
        wrapped[name] = (...args: number[]) => {
          budget.used = 0;
          if (batch && args[1]! >>> 0 > kvLimits.maxBatchItems) {
            refused = batchTooBig(args[1]! >>> 0, kvLimits.maxBatchItems);
            args[1] = 0;
          }
          try {
            return f(...args);
          } finally {
            budget.used = 0;
            refused = undefined;
          }
        };
      }
      return { ...imports, [HOST_INTERFACE]: wrapped };
    },
  };
}

/**
 * The memory the worker's isolate holds: its heap as committed (V8 gives pages back slowly,
 * long after their objects are collected) and the memory outside it that its ArrayBuffers own.
 */
function heldBytes(): number {
  const h = getHeapStatistics();
  return h.total_heap_size + h.external_memory;
}

/** Float64 [0]: memory the isolate held when the worker started; [1]: after its last call (WorkerInit.heap). */
const heap = new Float64Array((workerData as WorkerInit).heap);
heap[0] = heap[1] = heldBytes();

/** Records the memory the isolate holds now, after a call (~0.25 µs). */
export function noteHeap(): void {
  heap[1] = heldBytes();
}

/** The lift budget as it stands, to give back to a call once a call it made with run is over. */
export function saveBudget(): LiftBudget {
  return { ...budget };
}

export function restoreBudget(saved: LiftBudget): void {
  Object.assign(budget, saved);
}
