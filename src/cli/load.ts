// A bounded load against a plughost (or any server of PluginService): unary calls kept
// `concurrency` in flight, or one Stream keeping `concurrency` items outstanding. Used by
// `plughost bench` and by the benchmarks' load process. grpc-js client, one channel per run.
import { Metadata, credentials, makeGenericClientConstructor, type Client, type ClientDuplexStream } from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { InvokeRequestSchema, PluginService, StreamRequestSchema, type InvokeRequest, type InvokeResponse, type StreamRequest, type StreamResponse } from '../../gen/plughost/v1/plugin_pb.js';
import { grpcServiceDefinition } from '../service/grpc-definition.js';
import { percentile } from '../util/stats.js';

export interface LoadJob {
  address: string;
  token: string;
  mode: 'unary' | 'stream';
  /** Calls in flight (unary) or items outstanding on one stream. */
  concurrency: number;
  seconds: number;
  bytes: number;
  module: string;
  function?: string;
  /** PEM of the CA to trust: TLS instead of plaintext. */
  ca?: string;
}

export interface LoadResult {
  ops: number;
  seconds: number;
  opsPerSec: number;
  p50Us: number;
  p99Us: number;
  errors: number;
}

type Unary = (req: InvokeRequest, md: Metadata, cb: (e: Error | null, r?: InvokeResponse) => void) => void;
type PluginClient = Client & { invoke: Unary; stream(md: Metadata): ClientDuplexStream<StreamRequest, StreamResponse> };
const Ctor = makeGenericClientConstructor(grpcServiceDefinition(PluginService), 'PluginService');

async function unary(client: PluginClient, md: Metadata, job: LoadJob, args: Uint8Array, latencies: number[]): Promise<{ ops: number; errors: number }> {
  const request = create(InvokeRequestSchema, { module: job.module, function: job.function, args });
  const end = performance.now() + job.seconds * 1000;
  let ops = 0;
  let errors = 0;
  await Promise.all(Array.from({ length: job.concurrency }, async () => {
    while (performance.now() < end) {
      const t = performance.now();
      const ok = await new Promise<boolean>((resolve) => client.invoke(request, md, (e, r) => resolve(!e && r?.result.case === 'value')));
      latencies.push((performance.now() - t) * 1000);
      ops++;
      if (!ok) errors++;
    }
  }));
  return { ops, errors };
}

/** One bidi stream keeping `concurrency` items outstanding; the server's window is the same. */
function stream(client: PluginClient, md: Metadata, job: LoadJob, args: Uint8Array, latencies: number[]): Promise<{ ops: number; errors: number }> {
  const call = client.stream(md);
  const sentAt = new Map<bigint, number>();
  const end = performance.now() + job.seconds * 1000;
  let next = 0n;
  let stop = false;
  let ops = 0;
  let errors = 0;
  const fill = () => {
    while (!stop && sentAt.size < job.concurrency) {
      sentAt.set(next, performance.now());
      if (!call.write(create(StreamRequestSchema, { kind: { case: 'item', value: { id: next++, args } } }))) break;
    }
  };
  return new Promise((resolve, reject) => {
    call.on('data', (r: StreamResponse) => {
      const t = sentAt.get(r.id);
      sentAt.delete(r.id);
      if (r.outcome?.result.case !== 'value') errors++;
      if (t !== undefined) latencies.push((performance.now() - t) * 1000);
      ops++;
      if (!stop && performance.now() >= end) {
        stop = true;
        call.end();
      }
      fill();
    });
    call.on('drain', fill);
    call.on('end', () => resolve({ ops, errors }));
    call.on('error', reject);
    call.write(create(StreamRequestSchema, { kind: { case: 'options', value: { module: job.module, function: job.function, window: Math.min(job.concurrency, 1024) } } }));
    fill();
  });
}

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const creds = job.ca ? credentials.createSsl(Buffer.from(job.ca)) : credentials.createInsecure();
  const client = new Ctor(job.address, creds, { 'grpc.max_receive_message_length': 64 << 20 }) as unknown as PluginClient;
  const md = new Metadata();
  md.set('authorization', `Bearer ${job.token}`);
  const args = new Uint8Array(job.bytes).map((_, i) => i & 0xff);
  const latencies: number[] = [];
  try {
    const start = performance.now();
    const { ops, errors } = await (job.mode === 'stream' ? stream : unary)(client, md, job, args, latencies);
    const seconds = (performance.now() - start) / 1000;
    return { ops, seconds, opsPerSec: ops / seconds, p50Us: percentile(latencies, 50), p99Us: percentile(latencies, 99), errors };
  } finally {
    client.close();
  }
}
