// The servers a benchmark measures, each run as a child process of the benchmark:
// `bare` (grpc-js echoing the same PluginService messages, items and batches, no runtime:
// the floor) and
// `plughost` (the real service, with the bench guests pushed). Over IPC the child says
// `{ address, token }` once it listens, and closes when told `stop` or when its parent goes.
import { create } from '@bufbuild/protobuf';
import { Server, ServerCredentials, type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvokeResponseSchema, PluginService, StreamResponseSchema, type InvokeRequest, type InvokeResponse, type StreamRequest, type StreamResponse } from '../gen/plughost/v1/plugin_pb.js';
import { grpcServiceDefinition } from '../src/service/grpc-definition.js';
import { encodeStreamResponse } from '../src/service/stream-wire.js';
import { Plughost } from '../src/service/plughost.js';
import { fixture } from '../test/fixtures/build.js';

/** Guests pushed to the bench's plughost; `batch-echo` and `hash-batch` also export invoke-batch; `sql` asks the engine (bench/sql-bench.ts). */
export const BENCH_GUESTS = ['echo', 'kv', 'hash', 'batch-echo', 'hash-batch', 'sql'] as const;
export type ServerKind = 'bare' | 'plughost';

interface Running {
  address: string;
  token: string;
  close(): Promise<void>;
}

async function bare(): Promise<Running> {
  const server = new Server();
  // answers encoded as plughost encodes them (src/service/stream-wire.ts): the floor is the transport
  server.addService(grpcServiceDefinition(PluginService, { stream: encodeStreamResponse }), {
    invoke(call: ServerUnaryCall<InvokeRequest, InvokeResponse>, cb: sendUnaryData<InvokeResponse>) {
      cb(null, create(InvokeResponseSchema, { result: { case: 'value', value: call.request.args }, moduleHash: 'bare' }));
    },
    stream(call: ServerDuplexStream<StreamRequest, StreamResponse>) {
      call.on('data', (req: StreamRequest) => {
        let response: StreamResponse;
        if (req.kind.case === 'item') response = create(StreamResponseSchema, { id: req.kind.value.id, outcome: { result: { case: 'value', value: req.kind.value.args } } });
        else if (req.kind.case === 'batch') {
          const b = req.kind.value;
          response = create(StreamResponseSchema, { id: b.firstId, moduleHash: 'bare', batch: { firstId: b.firstId, outcomes: b.rows.map((value) => ({ result: { case: 'value' as const, value } })) } });
        } else return;
        const ok = call.write(response);
        if (!ok) {
          call.pause();
          call.once('drain', () => call.resume());
        }
      });
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { address: `127.0.0.1:${port}`, token: '-', close: () => new Promise((r) => server.tryShutdown(() => r())) };
}

async function plughost(): Promise<Running> {
  const dataDir = mkdtempSync(join(tmpdir(), 'plughost-bench-'));
  const host = await Plughost.start({ listen: '127.0.0.1:0', dataDir, stream: { defaultWindow: 64, maxWindow: 65536 }, metrics: { listen: '' }, log: { level: 'warn' } });
  for (const name of BENCH_GUESTS) await host.registry.push({ name, version: '1.0.0' }, await fixture(name));
  const { token } = await host.tokens.add({ subject: 'bench', tenant: 'bench', admin: true, modules: ['*'], kv: 'write' });
  return {
    address: host.address,
    token,
    close: async () => {
      await host.close(1000);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Starts a server child; `stop()` waits for it to exit. */
export async function startServerProcess(kind: ServerKind): Promise<{ address: string; token: string; pid: number; stop(): Promise<void> }> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [kind], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const ready = await new Promise<{ address: string; token: string }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { address: string; token: string }));
    child.once('exit', (code) => reject(new Error(`the ${kind} server exited (${code}) before it was ready`)));
  });
  return {
    ...ready,
    pid: child.pid!,
    stop: async () => {
      child.send('stop');
      await exited;
    },
  };
}

if (process.send && (process.argv[2] === 'bare' || process.argv[2] === 'plughost')) {
  const s = process.argv[2] === 'bare' ? await bare() : await plughost();
  const stop = () => s.close().then(() => process.exit(0));
  process.on('message', (m) => m === 'stop' && stop());
  process.on('disconnect', stop);
  process.send({ address: s.address, token: s.token });
}
