// A bounded load against a plughost (or any server of PluginService): unary calls kept
// `concurrency` in flight, or one Stream keeping `concurrency` items (or rows, sent in
// batches of `batch`) outstanding. Used by
// `plughost bench` and by the benchmarks' load process. grpc-js client, one channel per run.
// A call counts in `ops` only if it answered a value (and, with `expect`, the expected
// one); every other outcome (a failed call, a guest error, a wrong value, a stream item
// left unanswered when the stream failed or ended) counts in `errors` instead.
import { Metadata, credentials, makeGenericClientConstructor, type Client, type ClientDuplexStream, type ClientUnaryCall } from '@grpc/grpc-js';
import { create, toBinary } from '@bufbuild/protobuf';
import { FailureKind, type CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';
import { InvokeRequestSchema, PluginService, StreamRequestSchema, type InvokeRequest, type InvokeResponse, type StreamRequest, type StreamResponse } from '../../gen/plughost/v1/plugin_pb.js';
import { grpcServiceDefinition } from '../service/grpc-definition.js';
import { percentile } from '../util/stats.js';
import { batchRequestEncoder, readBatchAnswer } from './load-wire.js';

/**
 * What a call must answer to count as done: `'echo'` = its args back, `{ hex }` = exactly
 * these bytes. Absent: any value (only failures and guest errors count as errors).
 * Plain JSON, so that a job can cross IPC.
 */
export type LoadExpect = 'echo' | { hex: string };

export interface LoadJob {
  address: string;
  token: string;
  mode: 'unary' | 'stream';
  /** Calls in flight (unary) or items (rows, with `batch`) outstanding on one stream. */
  concurrency: number;
  /** Stream: send rows in batches of this many, one StreamBatch message each (absent: one item per row). */
  batch?: number;
  seconds: number;
  bytes: number;
  module: string;
  function?: string;
  /** PEM of the CA to trust: TLS instead of plaintext. */
  ca?: string;
  expect?: LoadExpect;
  /** Shorthand for `expect: 'echo'`. */
  expectEcho?: boolean;
}

export interface LoadResult {
  /** Calls (or stream items, or rows) that answered the expected value. */
  ops: number;
  seconds: number;
  /** ops / seconds: calls that did not answer rightly are not in it. */
  opsPerSec: number;
  /** Latencies of the calls in `ops` (with `batch`: of whole batches). */
  p50Us: number;
  p99Us: number;
  /** Calls or items that failed, answered a guest error or a wrong value, or were never answered. */
  errors: number;
  /** What the first error was, when there was one. */
  firstError?: string;
}

/** The args of a load of `bytes` bytes: a repeating 0..255 pattern. */
export const loadArgs = (bytes: number): Uint8Array => new Uint8Array(bytes).map((_, i) => i & 0xff);

/**
 * Grace past `seconds`: calls or items still unanswered then are cancelled (and count as
 * errors), so a stuck server cannot hang a load. Not a per-call deadline: that would put
 * a grpc-timeout header, and a timer on the server, on every call measured.
 */
const GRACE_MS = 30_000;

type Unary = (req: InvokeRequest, md: Metadata, cb: (e: Error | null, r?: InvokeResponse) => void) => ClientUnaryCall;
type PluginClient = Client & { invoke: Unary; stream(md: Metadata): ClientDuplexStream<StreamRequest, StreamResponse> };
const definition = grpcServiceDefinition(PluginService);
const Ctor = makeGenericClientConstructor(definition, 'PluginService');
/** Stream only, its messages as bytes both ways (see load-wire.ts). */
const RawCtor = makeGenericClientConstructor({ stream: { ...definition.stream!, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } }, 'PluginServiceRaw');
type RawStreamClient = Client & { stream(md: Metadata): ClientDuplexStream<Buffer, Buffer> };
const CHANNEL_OPTIONS = { 'grpc.max_receive_message_length': 64 << 20 };
const creds = (job: LoadJob) => (job.ca ? credentials.createSsl(Buffer.from(job.ca)) : credentials.createInsecure());

const equalBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;
const hex = (b: Uint8Array, max = 16) => `${Buffer.from(b.subarray(0, max)).toString('hex')}${b.length > max ? '…' : ''} (${b.length} B)`;

/** A call's result -> undefined when it is the expected one, else what is wrong with it. */
type Checker = (result: InvokeResponse['result'] | CallOutcome['result'] | undefined) => string | undefined;

function checker(job: LoadJob, args: Uint8Array): Checker {
  const expect = job.expect ?? (job.expectEcho ? 'echo' : undefined);
  const want = expect === undefined ? undefined : expect === 'echo' ? args : new Uint8Array(Buffer.from(expect.hex, 'hex'));
  return (result) => {
    if (result?.case === 'guestError') return `guest error: ${result.value}`;
    if (result?.case === 'failure') return `failure ${FailureKind[result.value.kind] ?? result.value.kind}: ${result.value.message}`;
    if (result?.case !== 'value') return 'no result';
    if (want && !equalBytes(result.value, want)) return `wrong value: ${hex(result.value)}, expected ${hex(want)}`;
    return undefined;
  };
}

interface Counts {
  ops: number;
  errors: number;
  firstError?: string;
}

function countError(c: Counts, what: string, n = 1) {
  c.errors += n;
  c.firstError ??= what;
}

async function unary(client: PluginClient, md: Metadata, job: LoadJob, args: Uint8Array, latencies: number[]): Promise<Counts> {
  const request = create(InvokeRequestSchema, { module: job.module, function: job.function, args });
  const check = checker(job, args);
  const end = performance.now() + job.seconds * 1000;
  const c: Counts = { ops: 0, errors: 0 };
  const inFlight = new Set<ClientUnaryCall>();
  const watchdog = setTimeout(() => {
    countError(c, `call: no answer ${GRACE_MS} ms past the load's end`, 0);
    for (const call of inFlight) call.cancel();
  }, job.seconds * 1000 + GRACE_MS);
  try {
    await Promise.all(Array.from({ length: job.concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        let call: ClientUnaryCall | undefined;
        const wrong = await new Promise<string | undefined>((resolve) => {
          call = client.invoke(request, md, (e, r) => resolve(e ? `call failed: ${e.message}` : check(r?.result)));
          inFlight.add(call);
        });
        inFlight.delete(call!);
        if (wrong === undefined) {
          latencies.push((performance.now() - t) * 1000);
          c.ops++;
        } else countError(c, wrong);
      }
    }));
  } finally {
    clearTimeout(watchdog);
  }
  return c;
}

/** One bidi stream keeping `concurrency` items (or rows) outstanding; the server's window is the same. */
function stream(client: PluginClient, md: Metadata, job: LoadJob, args: Uint8Array, latencies: number[]): Promise<Counts> {
  if (!job.batch) return items(client, md, job, args, latencies);
  const raw = new RawCtor(job.address, creds(job), CHANNEL_OPTIONS) as unknown as RawStreamClient;
  return batches(raw, md, job, args, latencies).finally(() => raw.close());
}

/**
 * Runs a stream until its load is over: `send` keeps it full, `answer` counts a response.
 * Whatever is still outstanding when the stream ends or fails was never answered.
 */
function driveStream<Req, Res>(
  call: ClientDuplexStream<Req, Res>,
  job: LoadJob,
  c: Counts,
  outstanding: () => number,
  hooks: { options: Req; fill(stop: boolean): void; answer(r: Res): void; forget(): void },
): Promise<Counts> {
  const end = performance.now() + job.seconds * 1000;
  let stop = false;
  return new Promise((resolve) => {
    let settled = false;
    // a server that stops answering: cancel, and the outstanding items count as errors
    const watchdog = setTimeout(() => {
      countError(c, `stream: no end ${GRACE_MS} ms past the load's end`, 0);
      call.cancel();
    }, job.seconds * 1000 + GRACE_MS);
    const settle = (why: string | undefined) => {
      if (settled) return;
      settled = true;
      stop = true;
      clearTimeout(watchdog);
      const n = outstanding();
      if (why !== undefined) countError(c, why, Math.max(1, n));
      else if (n > 0) countError(c, `stream ended with ${n} ${job.batch ? 'rows' : 'items'} unanswered`, n);
      hooks.forget();
      resolve(c);
    };
    call.on('data', (r: Res) => {
      hooks.answer(r);
      if (!stop && performance.now() >= end) {
        stop = true;
        call.end();
      }
      hooks.fill(stop);
    });
    call.on('drain', () => hooks.fill(stop));
    call.on('end', () => settle(undefined));
    call.on('error', (e: Error) => settle(`stream failed: ${e.message}`));
    call.write(hooks.options);
    hooks.fill(stop);
  });
}

/** Rows in batches of `job.batch`, `concurrency` rows outstanding (the window); messages by hand (load-wire.ts). */
function batches(client: RawStreamClient, md: Metadata, job: LoadJob, args: Uint8Array, latencies: number[]): Promise<Counts> {
  const call = client.stream(md);
  const check = checker(job, args);
  const size = job.batch!;
  const request = batchRequestEncoder(Array.from({ length: size }, () => args));
  const sentAt = new Map<bigint, number>();
  let next = 0n;
  const c: Counts = { ops: 0, errors: 0 };
  const outstanding = () => sentAt.size * size;
  const options = create(StreamRequestSchema, { kind: { case: 'options', value: { module: job.module, function: job.function, window: job.concurrency } } });
  return driveStream(call, job, c, outstanding, {
    options: Buffer.from(toBinary(StreamRequestSchema, options)),
    fill(stop) {
      // at least one batch in flight, however small the window
      while (!stop && (sentAt.size === 0 || outstanding() + size <= job.concurrency)) {
        sentAt.set(next, performance.now());
        const ok = call.write(request(next));
        next += BigInt(size);
        if (!ok) break;
      }
    },
    answer(bytes) {
      const r = readBatchAnswer(bytes);
      const t = sentAt.get(r.id);
      sentAt.delete(r.id);
      if (t === undefined) return countError(c, `stream: an answer for batch ${r.id}, which is not outstanding`, size);
      if (r.failure !== undefined) return countError(c, `batch refused: ${r.failure}`, size);
      if (r.outcomes.length !== size) return countError(c, `a batch of ${size} rows answered ${r.outcomes.length} outcomes`, size);
      latencies.push((performance.now() - t) * 1000);
      for (const o of r.outcomes) {
        const wrong = check(o);
        if (wrong === undefined) c.ops++;
        else countError(c, wrong);
      }
    },
    forget: () => sentAt.clear(),
  });
}

/** One item per row, `concurrency` items outstanding. */
function items(client: PluginClient, md: Metadata, job: LoadJob, args: Uint8Array, latencies: number[]): Promise<Counts> {
  const call = client.stream(md);
  const check = checker(job, args);
  const sentAt = new Map<bigint, number>();
  let next = 0n;
  const c: Counts = { ops: 0, errors: 0 };
  return driveStream(call, job, c, () => sentAt.size, {
    options: create(StreamRequestSchema, { kind: { case: 'options', value: { module: job.module, function: job.function, window: job.concurrency } } }),
    fill(stop) {
      while (!stop && sentAt.size < job.concurrency) {
        sentAt.set(next, performance.now());
        if (!call.write(create(StreamRequestSchema, { kind: { case: 'item', value: { id: next++, args } } }))) break;
      }
    },
    answer(r) {
      const t = sentAt.get(r.id);
      sentAt.delete(r.id);
      const wrong = t === undefined ? `stream: an answer for item ${r.id}, which is not outstanding` : check(r.outcome?.result);
      if (wrong === undefined) {
        latencies.push((performance.now() - t!) * 1000);
        c.ops++;
      } else countError(c, wrong);
    },
    forget: () => sentAt.clear(),
  });
}

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const client = new Ctor(job.address, creds(job), CHANNEL_OPTIONS) as unknown as PluginClient;
  const md = new Metadata();
  md.set('authorization', `Bearer ${job.token}`);
  const args = loadArgs(job.bytes);
  const latencies: number[] = [];
  try {
    const start = performance.now();
    const c = await (job.mode === 'stream' ? stream : unary)(client, md, job, args, latencies);
    const seconds = (performance.now() - start) / 1000;
    return { ops: c.ops, seconds, opsPerSec: c.ops / seconds, p50Us: percentile(latencies, 50), p99Us: percentile(latencies, 99), errors: c.errors, ...(c.firstError !== undefined && { firstError: c.firstError }) };
  } finally {
    client.close();
  }
}
