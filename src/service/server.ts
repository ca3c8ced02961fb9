// The gRPC edge: one grpc-js server with health and reflection, bound to one address.
// Whoever calls `startServer` owns the returned handle and must `close()` it.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { file_plughost_v1_module } from '../../gen/plughost/v1/module_pb.js';
import { file_plughost_v1_plugin } from '../../gen/plughost/v1/plugin_pb.js';
import { addReflection } from './reflection.js';

export interface ServerOptions {
  /** `host:port`; port 0 lets the OS pick. */
  listen: string;
}

export interface RunningServer {
  /** The port actually bound. */
  readonly port: number;
  readonly address: string;
  /** Stops accepting, lets in-flight calls finish within `graceMs`, then cancels the rest. */
  close(graceMs?: number): Promise<void>;
}

export const SERVICE_NAMES = ['plughost.v1.PluginService', 'plughost.v1.ModuleService'] as const;

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const server = new Server();
  const health = new HealthImplementation({ '': 'SERVING' });
  for (const name of SERVICE_NAMES) health.setStatus(name, 'SERVING');
  health.addToServer(server);
  addReflection(server, [file_plughost_v1_plugin, file_plughost_v1_module]);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(options.listen, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
  let closing: Promise<void> | undefined;
  return {
    port,
    address: `${host}:${port}`,
    close(graceMs = 5000) {
      closing ??= (async () => {
        health.setStatus('', 'NOT_SERVING');
        for (const name of SERVICE_NAMES) health.setStatus(name, 'NOT_SERVING');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, graceMs);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      })();
      return closing;
    },
  };
}
