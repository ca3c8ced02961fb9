// Every setting of the service, with its default, validated once (zod) where the service
// starts. The CLI fills it from flags, a file and the environment; tests pass objects.
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { PlughostError } from '../errors.js';
import { DEFAULT_KV_LIMITS } from '../runtime/options.js';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const MiB = 1 << 20;

const kvLimits = z.strictObject({
  maxKeyBytes: int(1, 1024).default(DEFAULT_KV_LIMITS.maxKeyBytes),
  maxValueBytes: int(1, 1 << 30).default(DEFAULT_KV_LIMITS.maxValueBytes),
  maxEntriesPerScope: int(1).default(DEFAULT_KV_LIMITS.maxEntriesPerScope),
  maxBatchItems: int(1).default(DEFAULT_KV_LIMITS.maxBatchItems),
  maxRangeEntries: int(1).default(DEFAULT_KV_LIMITS.maxRangeEntries),
});

export const configSchema = z.strictObject({
  /** host:port; port 0 lets the OS pick. */
  listen: z.string().regex(/^.+:\d+$/, 'must be host:port').default('127.0.0.1:50051'),
  /** Modules, tokens and KV live here. */
  dataDir: z.string().min(1).default('./data'),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).optional(),
  workers: int(1, 256).default(() => availableParallelism()),
  /** The caps every module's manifest limits are lowered to. */
  limits: z.strictObject({
    maxPoolSize: int(1, 100_000).default(64),
    maxMemoryBytes: int(1, 4 * 1024 * MiB).default(256 * MiB),
    maxExecutionMs: int(1, 24 * 3600_000).default(10_000),
    kv: kvLimits.default(() => kvLimits.parse({})),
  }).default(() => ({ maxPoolSize: 64, maxMemoryBytes: 256 * MiB, maxExecutionMs: 10_000, kv: kvLimits.parse({}) })),
  acquireTimeoutMs: int(1).default(10_000),
  hostCallTimeoutMs: int(1).default(5_000),
  idleTimeoutMs: int(1).default(300_000),
  maxControllers: int(1, 13_000).default(10_000),
  workerHeapMb: int(16, 16_384).default(512),
  maxModuleBytes: int(1, 1024 * MiB).default(64 * MiB),
  kv: z.strictObject({
    commitMode: z.enum(['grouped', 'per-call']).default('grouped'),
    lockTimeoutMs: int(1).default(2_000),
  }).default({ commitMode: 'grouped', lockTimeoutMs: 2_000 }),
  grpc: z.strictObject({
    maxReceiveMessageBytes: int(1024, 1024 * MiB).default(4 * MiB),
    maxSendMessageBytes: int(1024, 1024 * MiB).default(4 * MiB),
    keepaliveTimeMs: int(1000).default(60_000),
    keepaliveTimeoutMs: int(100).default(20_000),
  }).default({ maxReceiveMessageBytes: 4 * MiB, maxSendMessageBytes: 4 * MiB, keepaliveTimeMs: 60_000, keepaliveTimeoutMs: 20_000 }),
  stream: z.strictObject({
    /** Items of one Stream run at once when the client asks for no window. */
    defaultWindow: int(1).default(64),
    /** The most a client may ask for. */
    maxWindow: int(1).default(1024),
  }).default({ defaultWindow: 64, maxWindow: 1024 }),
  /** On SIGTERM/close: how long calls in flight may take to finish before they are cancelled. */
  shutdownGraceMs: int(0).default(10_000),
  metrics: z.strictObject({
    /** host:port of the Prometheus endpoint (GET /metrics); empty turns it off. */
    listen: z.string().regex(/^(.+:\d+)?$/, 'must be host:port, or empty to turn metrics off').default('127.0.0.1:9464'),
  }).default({ listen: '127.0.0.1:9464' }),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  }).default({ level: 'info' }),
});

export type PlughostConfig = z.output<typeof configSchema>;
export type PlughostConfigInput = z.input<typeof configSchema>;

/** Validates and fills defaults; the error names every bad key. */
export function parseConfig(input: unknown): PlughostConfig {
  const r = configSchema.safeParse(input ?? {});
  if (r.success) {
    if (r.data.stream.defaultWindow > r.data.stream.maxWindow) {
      throw new PlughostError('INVALID_ARGUMENT', `invalid configuration: stream.defaultWindow (${r.data.stream.defaultWindow}) is over stream.maxWindow (${r.data.stream.maxWindow})`);
    }
    return r.data;
  }
  const lines = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
  throw new PlughostError('INVALID_ARGUMENT', `invalid configuration: ${lines.join('; ')}`);
}
