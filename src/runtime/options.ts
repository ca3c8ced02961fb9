// Server-wide runtime settings and per-module limits: defaults, validation (once, here),
// and the rule that a module's limit is the lower of its manifest and the server's cap.
import { availableParallelism } from 'node:os';
import { PlughostError } from '../errors.js';
import type { KvLimits } from '../kv/types.js';

export interface ModuleLimits {
  /** Most controllers of the module, idle or in use (also capped by the worker count). */
  maxPoolSize: number;
  /** Most linear memory per controller. */
  maxMemoryBytes: number;
  /** Time limit of one call, including a new controller's instantiation and init. */
  maxExecutionMs: number;
  kv: KvLimits;
}

export interface RuntimeOptions {
  /** Worker threads hosting controllers. */
  workers: number;
  /** The caps every module's limits are lowered to. */
  caps: ModuleLimits;
  /** How long a call waits for a controller when the caller set no deadline. */
  acquireTimeoutMs: number;
  /** How long one host call (KV, sql, run) may block the guest. */
  hostCallTimeoutMs: number;
  /** Idle controllers older than this are evicted. */
  idleTimeoutMs: number;
  /** Most live controllers in the process (each wasm memory reserves ~10 GiB of address space). */
  maxControllers: number;
  /** V8 heap cap of each worker, in MiB. */
  workerHeapMb: number;
}

export const DEFAULT_KV_LIMITS: KvLimits = {
  maxKeyBytes: 1024,
  maxValueBytes: 1 << 20,
  maxEntriesPerScope: 1_000_000,
  maxBatchItems: 1000,
  maxRangeEntries: 10_000,
};

export function defaultRuntimeOptions(): RuntimeOptions {
  return {
    workers: availableParallelism(),
    caps: { maxPoolSize: 64, maxMemoryBytes: 256 << 20, maxExecutionMs: 10_000, kv: { ...DEFAULT_KV_LIMITS } },
    acquireTimeoutMs: 10_000,
    hostCallTimeoutMs: 5_000,
    idleTimeoutMs: 300_000,
    maxControllers: 10_000,
    workerHeapMb: 512,
  };
}

function positiveInt(path: string, v: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new PlughostError('INVALID_ARGUMENT', `${path} must be an integer from 1 to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function validateModuleLimits(path: string, l: ModuleLimits): ModuleLimits {
  return {
    maxPoolSize: positiveInt(`${path}.maxPoolSize`, l.maxPoolSize, 100_000),
    maxMemoryBytes: positiveInt(`${path}.maxMemoryBytes`, l.maxMemoryBytes, 4 * 1024 ** 3),
    maxExecutionMs: positiveInt(`${path}.maxExecutionMs`, l.maxExecutionMs, 24 * 3600_000),
    kv: {
      maxKeyBytes: positiveInt(`${path}.kv.maxKeyBytes`, l.kv.maxKeyBytes, 1024),
      maxValueBytes: positiveInt(`${path}.kv.maxValueBytes`, l.kv.maxValueBytes, 1 << 30),
      maxEntriesPerScope: positiveInt(`${path}.kv.maxEntriesPerScope`, l.kv.maxEntriesPerScope),
      maxBatchItems: positiveInt(`${path}.kv.maxBatchItems`, l.kv.maxBatchItems),
      maxRangeEntries: positiveInt(`${path}.kv.maxRangeEntries`, l.kv.maxRangeEntries),
    },
  };
}

export type RuntimeOptionsInput = Partial<Omit<RuntimeOptions, 'caps'>> & {
  caps?: Partial<Omit<ModuleLimits, 'kv'>> & { kv?: Partial<KvLimits> };
};

export function resolveRuntimeOptions(input: RuntimeOptionsInput = {}): RuntimeOptions {
  const d = defaultRuntimeOptions();
  const merged: RuntimeOptions = {
    ...d,
    ...input,
    caps: { ...d.caps, ...input.caps, kv: { ...d.caps.kv, ...input.caps?.kv } },
  };
  return {
    workers: positiveInt('workers', merged.workers, 256),
    caps: validateModuleLimits('caps', merged.caps),
    acquireTimeoutMs: positiveInt('acquireTimeoutMs', merged.acquireTimeoutMs),
    hostCallTimeoutMs: positiveInt('hostCallTimeoutMs', merged.hostCallTimeoutMs),
    idleTimeoutMs: positiveInt('idleTimeoutMs', merged.idleTimeoutMs),
    maxControllers: positiveInt('maxControllers', merged.maxControllers, 13_000),
    workerHeapMb: positiveInt('workerHeapMb', merged.workerHeapMb, 16_384),
  };
}

/** A module's limits: each manifest value lowered to the server's cap; absent = the cap. */
export type ModuleLimitsInput = Partial<Omit<ModuleLimits, 'kv'>> & { kv?: Partial<KvLimits> };

export function effectiveLimits(caps: ModuleLimits, requested: ModuleLimitsInput = {}): ModuleLimits {
  const low = (cap: number, v: number | undefined) => (v === undefined ? cap : Math.min(cap, v));
  return validateModuleLimits('limits', {
    maxPoolSize: low(caps.maxPoolSize, requested.maxPoolSize),
    maxMemoryBytes: low(caps.maxMemoryBytes, requested.maxMemoryBytes),
    maxExecutionMs: low(caps.maxExecutionMs, requested.maxExecutionMs),
    kv: {
      maxKeyBytes: low(caps.kv.maxKeyBytes, requested.kv?.maxKeyBytes),
      maxValueBytes: low(caps.kv.maxValueBytes, requested.kv?.maxValueBytes),
      maxEntriesPerScope: low(caps.kv.maxEntriesPerScope, requested.kv?.maxEntriesPerScope),
      maxBatchItems: low(caps.kv.maxBatchItems, requested.kv?.maxBatchItems),
      maxRangeEntries: low(caps.kv.maxRangeEntries, requested.kv?.maxRangeEntries),
    },
  });
}
