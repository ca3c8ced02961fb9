// Every setting of the service, with its default, validated once (zod) where the service
// starts. The CLI fills it from flags, a file and the environment; tests pass objects.
import { z } from 'zod';
import { PlughostError } from '../errors.js';
import { invalid, runtimeOptionsSchema, type RuntimeOptions } from '../runtime/options.js';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const MiB = 1 << 20;

export const configSchema = z.strictObject({
  /** host:port; port 0 lets the OS pick. */
  listen: z.string().regex(/^.+:\d+$/, 'must be host:port').default('127.0.0.1:50051'),
  /** Modules, tokens and KV live here. */
  dataDir: z.string().min(1).default('./data'),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).optional(),
  // the runtime's own settings (workers, limits, timeouts, shutdownGraceMs...), defaults and bounds included
  ...runtimeOptionsSchema.shape,
  maxModuleBytes: int(1, 1024 * MiB).default(64 * MiB),
  kv: z.strictObject({
    commitMode: z.enum(['grouped', 'per-call']).default('grouped'),
    lockTimeoutMs: int(1).default(10_000),
  }).default({ commitMode: 'grouped', lockTimeoutMs: 10_000 }),
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
  throw invalid('configuration', r.error);
}

/** The runtime's part of a configuration. */
export function runtimeOptionsOf(config: PlughostConfig): RuntimeOptions {
  // every key of the runtime's schema, so a new runtime setting needs no change here
  return Object.fromEntries(Object.keys(runtimeOptionsSchema.shape).map((k) => [k, config[k as keyof RuntimeOptions]])) as RuntimeOptions;
}
