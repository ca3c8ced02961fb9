// The gRPC edge: one grpc-js server with the given services, health (per service) and
// reflection, bound to one address. Whoever calls `startServer` owns the returned
// handle and must `close()` it.
import type { DescFile, DescService } from '@bufbuild/protobuf';
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { readFileSync } from 'node:fs';
import { PlughostError, messageOf } from '../errors.js';
import { grpcServiceDefinition } from './grpc-definition.js';
import { addReflection } from './reflection.js';

export interface ServerOptions {
  /** `host:port`; port 0 lets the OS pick. */
  listen: string;
  tls?: { certFile: string; keyFile: string };
  maxReceiveMessageBytes: number;
  maxSendMessageBytes: number;
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  /** Each service, optionally with faster serializers for some of its methods' responses. */
  services: { desc: DescService; impl: UntypedServiceImplementation; responseSerializers?: Record<string, (v: never) => Buffer> }[];
  /** The files whose services reflection lists. */
  files: DescFile[];
}

export interface RunningServer {
  /** The port actually bound. */
  readonly port: number;
  readonly address: string;
  /**
   * Graceful shutdown: every service goes NOT_SERVING; once `drained` settles (the owner,
   * which refuses new calls meanwhile, has finished its calls and streams) or `graceMs`
   * passes, the listener closes and whatever is left is cancelled.
   */
  close(graceMs: number, drained?: Promise<unknown>): Promise<void>;
}

function credentials(tls: ServerOptions['tls']): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  try {
    return ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) }], false);
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `TLS: cannot use tls.certFile ${tls.certFile} / tls.keyFile ${tls.keyFile}: ${messageOf(e)}`);
  }
}

/** How long answers already given may take to reach the wire before a forced close. */
const FLUSH_MS = 250;

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const server = new Server({
    'grpc.max_receive_message_length': options.maxReceiveMessageBytes,
    'grpc.max_send_message_length': options.maxSendMessageBytes,
    'grpc.keepalive_time_ms': options.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs,
    // let clients ping as often as we ping them
    'grpc.http2.min_ping_interval_without_data_ms': Math.min(options.keepaliveTimeMs, 10_000),
    'grpc.keepalive_permit_without_calls': 1,
  });
  const names = options.services.map((s) => s.desc.typeName);
  const health = new HealthImplementation({ '': 'SERVING', ...Object.fromEntries(names.map((n) => [n, 'SERVING'])) });
  health.addToServer(server);
  for (const { desc, impl, responseSerializers } of options.services) server.addService(grpcServiceDefinition(desc, responseSerializers), impl);
  addReflection(server, options.files);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(options.listen, credentials(options.tls), (err, p) => (err ? reject(new PlughostError('UNAVAILABLE', `cannot listen on ${options.listen}: ${err.message}`)) : resolve(p))),
  );
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
  let closing: Promise<void> | undefined;
  return {
    port,
    address: `${host}:${port}`,
    close(graceMs, drained) {
      closing ??= (async () => {
        health.setStatus('', 'NOT_SERVING');
        for (const name of names) health.setStatus(name, 'NOT_SERVING');
        const until = Date.now() + graceMs;
        const timers: NodeJS.Timeout[] = [];
        const after = (ms: number) => new Promise<void>((resolve) => timers.push(setTimeout(resolve, Math.max(0, ms))));
        // the owner refuses new calls (UNAVAILABLE) while its calls drain, over connections
        // that stay open until then (a GOAWAY now would make clients' late streams be refused at the HTTP/2
        // level, and enough of those make Node end the whole session, calls in flight too)
        if (drained) await Promise.race([Promise.allSettled([drained]), after(graceMs)]);
        const shutDown = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
        if (!drained) await Promise.race([shutDown, after(graceMs)]);
        // the last answers are handed to grpc-js but may not be on the wire yet: give them a
        // moment; what then remains are streams whose clients have not closed their side
        await Promise.race([shutDown, after(Math.min(FLUSH_MS, until - Date.now()))]);
        for (const t of timers) clearTimeout(t);
        server.forceShutdown();
        await shutDown;
      })();
      return closing;
    },
  };
}
