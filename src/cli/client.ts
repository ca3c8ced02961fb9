// The CLI's connection to a running plughost: connect-node clients over HTTP/2 (gRPC
// protocol), the token as `authorization: Bearer` metadata, and errors as one line.
import { Code, ConnectError, createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { Http2SessionManager, createGrpcTransport } from '@connectrpc/connect-node';
import { readFileSync } from 'node:fs';
import { ModuleService } from '../../gen/plughost/v1/module_pb.js';
import { PluginService } from '../../gen/plughost/v1/plugin_pb.js';
import { PlughostError, messageOf } from '../errors.js';

export interface ConnectionOptions {
  address: string;
  token?: string;
  /** A CA certificate file: connect with TLS. */
  tlsCa?: string;
  /** Per-call deadline in ms. */
  timeout?: number;
}

export interface Connection {
  plugins: Client<typeof PluginService>;
  modules: Client<typeof ModuleService>;
  callOptions: { timeoutMs?: number };
  /** PEM of the CA, when TLS. */
  ca?: string;
  close(): void;
}

export function connect(o: ConnectionOptions): Connection {
  const ca = o.tlsCa ? readFileSync(o.tlsCa, 'utf8') : undefined;
  const baseUrl = `${ca ? 'https' : 'http'}://${o.address}`;
  const sessionManager = new Http2SessionManager(baseUrl, undefined, ca ? { ca } : undefined);
  const auth: Interceptor = (next) => (req) => {
    if (o.token) req.header.set('authorization', `Bearer ${o.token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl, sessionManager, interceptors: [auth] });
  return {
    plugins: createClient(PluginService, transport),
    modules: createClient(ModuleService, transport),
    callOptions: o.timeout ? { timeoutMs: o.timeout } : {},
    ca,
    close: () => sessionManager.abort(),
  };
}

/** One line for any error: the gRPC code (and plughost's own code) and the server's message. */
export function describeError(e: unknown): string {
  if (e instanceof ConnectError) {
    const own = e.metadata.get('plughost-error-code');
    const hint = e.code === Code.Unauthenticated ? ' (pass --token or set PLUGHOST_TOKEN)' : e.code === Code.Unavailable ? ' (is the server running? --address)' : '';
    return `${Code[e.code]}${own ? ` ${own}` : ''}: ${e.rawMessage}${hint}`;
  }
  if (e instanceof PlughostError) return `${e.code}: ${e.message}`;
  return messageOf(e);
}
