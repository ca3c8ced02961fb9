// The runtime's settings and per-module limits: one schema (zod) holds every default and
// bound; the service's configuration embeds it, so nothing is written twice. A module's
// limit is the lower of its manifest and the server's cap.
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { PlughostError } from '../errors.js';
import type { KvLimits } from '../kv/types.js';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const MiB = 1 << 20;

export const kvLimitsSchema = z.strictObject({
  maxKeyBytes: int(1, 1024).default(1024),
  maxValueBytes: int(1, 1 << 30).default(MiB),
  maxEntriesPerScope: int(1).default(1_000_000),
  maxBatchItems: int(1).default(1000),
  maxRangeEntries: int(1).default(10_000),
});

export const moduleLimitsSchema = z.strictObject({
  /** Most controllers of the module, checked out at once and pooled. */
  maxPoolSize: int(1, 100_000).default(64),
  /** Most linear memory per controller. */
  maxMemoryBytes: int(1, 4 * 1024 * MiB).default(256 * MiB),
  /** Time budget of one call: a new controller's instantiation and init, introspection and the call itself. */
  maxExecutionMs: int(1, 24 * 3600_000).default(10_000),
  kv: kvLimitsSchema.default(() => kvLimitsSchema.parse({})),
});

export const runtimeOptionsSchema = z.strictObject({
  /** Worker threads hosting controllers. */
  workers: int(1, 256).default(() => availableParallelism()),
  /** The caps every module's manifest limits are lowered to. */
  limits: moduleLimitsSchema.default(() => moduleLimitsSchema.parse({})),
  /** How long a call waits for a controller (or its KV scope's write lock) when the caller set no deadline. */
  acquireTimeoutMs: int(1).default(10_000),
  /** How long one host call over the bridge (KV of a remote store, sql, run) may block the guest. */
  hostCallTimeoutMs: int(1).default(5_000),
  /** Deepest chain of `run` calls: a top-level call is depth 0, a `run` from it depth 1 (its run past this gets err). */
  maxRunDepth: int(1, 64).default(8),
  /** Idle controllers older than this are evicted. */
  idleTimeoutMs: int(1).default(300_000),
  /** Most live controllers in the process (each wasm memory reserves ~10 GiB of address space). */
  maxControllers: int(1, 13_000).default(10_000),
  /** V8 heap cap of each worker, in MiB. */
  workerHeapMb: int(16, 16_384).default(512),
  /**
   * A worker whose V8 heap in use stands more than this many MiB above where it started,
   * after a call, is recycled: a fresh one takes its place and it stops once its calls are
   * done, so memory a guest made it take comes back (0: never).
   */
  workerRecycleHeapMb: int(0, 16_384).default(128),
  /** Longest a worker spins waiting for its next call before it sleeps, in µs (0: never spins). */
  workerSpinUs: int(0, 10_000).default(50),
  /**
   * After a module's call runs past its time limit, for this long at most workers - 1 of
   * its calls run at once (at least one), so a spinning module cannot occupy every worker
   * (0: never quarantine).
   */
  quarantineMs: int(0).default(10_000),
  /**
   * Longest one `invoke-batch` entry may run: its limit is the module's per-call limit times
   * its rows, at most this. An entry stopped at it wrote nothing; its rows run again one by one.
   */
  batchEntryMaxMs: int(1).default(60_000),
  /** Guest `log` lines each module may write per second (more are dropped and counted; 0: none). */
  guestLogLinesPerSecond: int(0).default(100),
  /** Bytes of guest `log` lines each module may write per second (a line is at most 8 KiB). */
  guestLogBytesPerSecond: int(0).default(64 * 1024),
  /** On close/SIGTERM: how long calls in flight may take to finish before they are failed with UNAVAILABLE. */
  shutdownGraceMs: int(0).default(10_000),
});

export type ModuleLimits = z.output<typeof moduleLimitsSchema>;
export type RuntimeOptions = z.output<typeof runtimeOptionsSchema>;
export type RuntimeOptionsInput = z.input<typeof runtimeOptionsSchema>;
/** A module's limits as its manifest asks: each lowered to the server's cap; absent = the cap. */
export type ModuleLimitsInput = Partial<Omit<ModuleLimits, 'kv'>> & { kv?: Partial<KvLimits> };

export const DEFAULT_KV_LIMITS: KvLimits = kvLimitsSchema.parse({});

/** Formats zod's issues as one message naming every bad key. */
export function invalid(what: string, error: z.ZodError): PlughostError {
  const lines = error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
  return new PlughostError('INVALID_ARGUMENT', `invalid ${what}: ${lines.join('; ')}`);
}

export function resolveRuntimeOptions(input: unknown = {}): RuntimeOptions {
  const r = runtimeOptionsSchema.safeParse(input ?? {});
  if (!r.success) throw invalid('runtime options', r.error);
  return r.data;
}

export function effectiveLimits(caps: ModuleLimits, requested: ModuleLimitsInput = {}): ModuleLimits {
  const low = (cap: number, v: number | undefined) => (v === undefined ? cap : Math.min(cap, v));
  const r = moduleLimitsSchema.safeParse({
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
  if (!r.success) throw invalid('limits', r.error);
  return r.data;
}
