// Every setting of the service, with its default, validated once (zod) where the service
// starts. The CLI fills it from flags, a file and the environment; tests pass objects.
import { z } from 'zod';
import { PlughostError } from '../errors.js';
import { invalid, runtimeOptionsSchema, type RuntimeOptions } from '../runtime/options.js';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const MiB = 1 << 20;
/** The most stream.maxBatchRows may be set to. */
const MAX_BATCH_ROWS = 1 << 20;
/** stream.maxBatchBytes when the configuration does not set it (and grpc.maxReceiveMessageBytes is larger). */
export const DEFAULT_MAX_BATCH_BYTES = 16 * MiB;

export const configSchema = z.strictObject({
  /** host:port; port 0 lets the OS pick. */
  listen: z.string().regex(/^.+:\d+$/, 'must be host:port').default('127.0.0.1:50051'),
  /** Modules, tokens and KV live here. */
  dataDir: z.string().min(1).default('./data'),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).optional(),
  // the runtime's own settings (workers, limits, timeouts, shutdownGraceMs...), defaults and bounds included
  ...runtimeOptionsSchema.shape,
  maxModuleBytes: int(1, 1024 * MiB).default(64 * MiB),
  /**
   * Where modules, tokens and KV live: `lmdb` (the data directory, one process) or the URL of
   * a PostgreSQL (or CockroachDB, YugabyteDB) that several replicas share.
   */
  store: z.union([z.literal('lmdb'), z.string().regex(/^postgres(ql)?:\/\/./, 'must be lmdb or a postgres:// URL')]).default('lmdb'),
  /** The PostgreSQL store's connection settings (used when store is a URL). */
  postgres: z.strictObject({
    /** Connections per replica; each call with KV holds one for its transaction. */
    poolSize: int(1, 1000).default(16),
    statementTimeoutMs: int(100).default(10_000),
    /** The most a call waits for a connection before it fails with UNAVAILABLE. */
    connectTimeoutMs: int(100).default(5_000),
    /** How often each replica looks for module and token changes made elsewhere. */
    pollMs: int(20, 60_000).default(1000),
    /** TLS to the server (or put sslmode=... in the URL): a CA to verify it with; verify false accepts any certificate. */
    tls: z.strictObject({ caFile: z.string().min(1).optional(), verify: z.boolean().default(true) }).optional(),
  }).default({ poolSize: 16, statementTimeoutMs: 10_000, connectTimeoutMs: 5_000, pollMs: 1000 }),
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
    /** Rows of one Stream in flight when the client asks for no window (an item is one row, a batch as many as it carries). */
    defaultWindow: int(1).default(64),
    /** The most a client may ask for; a larger window is lowered to it. */
    maxWindow: int(1).default(65_536),
    /** Rows one batch message may carry. */
    maxBatchRows: int(1, MAX_BATCH_ROWS).default(8192),
    /** Bytes of rows one batch may carry (their sum); absent: the lower of 16 MiB and grpc.maxReceiveMessageBytes, which it may not exceed. */
    maxBatchBytes: int(1, 1024 * MiB).optional(),
  }).default({ defaultWindow: 64, maxWindow: 65_536, maxBatchRows: 8192 }),
  metrics: z.strictObject({
    /** host:port of the Prometheus endpoint (GET /metrics); empty turns it off. */
    listen: z.string().regex(/^(.+:\d+)?$/, 'must be host:port, or empty to turn metrics off').default('127.0.0.1:9464'),
  }).default({ listen: '127.0.0.1:9464' }),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  }).default({ level: 'info' }),
});

type ParsedConfig = z.output<typeof configSchema>;
/** A validated configuration: every default filled, stream.maxBatchBytes too. */
export type PlughostConfig = ParsedConfig & { stream: ParsedConfig['stream'] & { maxBatchBytes: number } };
export type PlughostConfigInput = z.input<typeof configSchema>;

/** Validates and fills defaults; the error names every bad key. */
export function parseConfig(input: unknown): PlughostConfig {
  const r = configSchema.safeParse(input ?? {});
  if (!r.success) throw invalid('configuration', r.error);
  const { stream, grpc } = r.data;
  const bad = (message: string) => new PlughostError('INVALID_ARGUMENT', `invalid configuration: ${message}`);
  if (stream.defaultWindow > stream.maxWindow) throw bad(`stream.defaultWindow (${stream.defaultWindow}) is over stream.maxWindow (${stream.maxWindow})`);
  // a batch arrives in one message, so a byte cap above the receive cap could never be reached
  if (stream.maxBatchBytes !== undefined && stream.maxBatchBytes > grpc.maxReceiveMessageBytes) {
    throw bad(`stream.maxBatchBytes: ${stream.maxBatchBytes} is over grpc.maxReceiveMessageBytes (${grpc.maxReceiveMessageBytes}), the largest message a batch can arrive in`);
  }
  return { ...r.data, stream: { ...stream, maxBatchBytes: stream.maxBatchBytes ?? Math.min(DEFAULT_MAX_BATCH_BYTES, grpc.maxReceiveMessageBytes) } };
}

/** The runtime's part of a configuration. */
export function runtimeOptionsOf(config: PlughostConfig): RuntimeOptions {
  // every key of the runtime's schema, so a new runtime setting needs no change here
  return Object.fromEntries(Object.keys(runtimeOptionsSchema.shape).map((k) => [k, config[k as keyof RuntimeOptions]])) as RuntimeOptions;
}
