// A real plughost on 127.0.0.1 (port picked by the OS, data in a temp dir) and
// connect-node clients for it, all shut down when the test ends.
import type { ExecutionContext } from 'ava';
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { Http2SessionManager, createGrpcTransport } from '@connectrpc/connect-node';
import { ModuleService } from '../../gen/plughost/v1/module_pb.js';
import { PluginService } from '../../gen/plughost/v1/plugin_pb.js';
import { Plughost } from '../../src/service/plughost.js';
import type { PlughostConfigInput } from '../../src/service/config.js';
import { fixture } from '../fixtures/build.js';
import { tempDir } from './kv.js';

/** What every test server shares: loopback, OS-picked ports, quiet logs. */
export const TEST_CONFIG = { listen: '127.0.0.1:0', workers: 2, metrics: { listen: '127.0.0.1:0' }, log: { level: 'silent' } } as const satisfies PlughostConfigInput;

export async function startPlughost(t: ExecutionContext, config: PlughostConfigInput = {}): Promise<Plughost> {
  const host = await Plughost.start({ ...TEST_CONFIG, dataDir: tempDir(t), ...config });
  t.teardown(() => host.close(2000));
  return host;
}

export interface Clients {
  plugins: Client<typeof PluginService>;
  modules: Client<typeof ModuleService>;
}

/** Clients that send `token` (none: no authorization metadata), closed when the test ends. */
export function clients(t: ExecutionContext, address: string, token?: string, tls?: { ca: string }): Clients {
  const baseUrl = `${tls ? 'https' : 'http'}://${address}`;
  const sessionManager = new Http2SessionManager(baseUrl, undefined, tls ? { ca: tls.ca } : undefined);
  t.teardown(() => sessionManager.abort());
  const auth: Interceptor = (next) => (req) => {
    if (token !== undefined) req.header.set('authorization', `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl, sessionManager, interceptors: [auth] });
  return { plugins: createClient(PluginService, transport), modules: createClient(ModuleService, transport) };
}

/** Pushes bytes as `name@version` in chunks of `chunkSize`. */
export async function push(c: Clients, name: string, version: string, bytes: Uint8Array, extra: { chunkSize?: number; expectedHash?: string; limits?: Record<string, number | bigint> } = {}) {
  const size = extra.chunkSize ?? 16 * 1024;
  async function* parts() {
    yield { part: { case: 'manifest' as const, value: { name, version, expectedHash: extra.expectedHash ?? '', limits: extra.limits } } };
    for (let i = 0; i < bytes.length; i += size) yield { part: { case: 'chunk' as const, value: bytes.subarray(i, i + size) } };
  }
  return c.modules.pushModule(parts());
}

export async function pushFixture(c: Clients, name: string, version = '1.0.0', as = name) {
  return push(c, as, version, await fixture(name));
}
