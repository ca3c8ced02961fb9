// A grpc-js client of PluginService over several plughost replicas, balanced round-robin
// by grpc-js itself (the ipv4: scheme with many addresses and the round_robin policy), as
// an engine would configure it; and one Invoke as a promise with its status code.
import { create } from '@bufbuild/protobuf';
import { Metadata, credentials, makeGenericClientConstructor, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { InvokeRequestSchema, PluginService, type InvokeRequest, type InvokeResponse } from '../../gen/plughost/v1/plugin_pb.js';
import { grpcServiceDefinition } from '../../src/service/grpc-definition.js';

type Unary = (req: InvokeRequest, md: Metadata, options: { deadline: number }, cb: (e: ServiceError | null, r?: InvokeResponse) => void) => void;

export interface InvokeOutcome {
  code: status;
  value?: Uint8Array | undefined;
  guestError?: string | undefined;
  message?: string | undefined;
}

export class RoundRobinClient {
  readonly client: Client & { invoke: Unary };

  /** `addresses`: host:port of each replica. */
  constructor(addresses: string[], private readonly token: string) {
    const Ctor = makeGenericClientConstructor(grpcServiceDefinition(PluginService), 'PluginService');
    this.client = new Ctor(`ipv4:${addresses.join(',')}`, credentials.createInsecure(), {
      'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
      // a replica that went away is tried again soon once it is back
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 1000,
    }) as unknown as Client & { invoke: Unary };
  }

  invoke(module: string, fn: string | undefined, args: Uint8Array, timeoutMs = 20_000, token = this.token): Promise<InvokeOutcome> {
    const md = new Metadata();
    md.set('authorization', `Bearer ${token}`);
    const req = create(InvokeRequestSchema, { module, args, ...(fn === undefined ? {} : { function: fn }) });
    return new Promise((resolve) =>
      this.client.invoke(req, md, { deadline: Date.now() + timeoutMs }, (e, r) => {
        if (e) return resolve({ code: e.code, message: e.details });
        const out = r!.result;
        resolve({ code: status.OK, value: out.case === 'value' ? out.value : undefined, guestError: out.case === 'guestError' ? out.value : undefined });
      }),
    );
  }

  close(): void {
    this.client.close();
  }
}
