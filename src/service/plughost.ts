// The whole service, composed from one validated configuration: the KV store, the runtime,
// the registry, the tokens and the gRPC server. It owns all of them; `close()` shuts them
// down in order: stop accepting, drain streams and calls, then the runtime, then the store.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { file_plughost_v1_module, ModuleService } from '../../gen/plughost/v1/module_pb.js';
import { file_plughost_v1_plugin, PluginService } from '../../gen/plughost/v1/plugin_pb.js';
import { ADMIN_GRANT, TokenStore } from '../auth/tokens.js';
import { LmdbKvStore } from '../kv/lmdb-store.js';
import { ModuleRegistry } from '../registry/registry.js';
import { RuntimeManager, type RuntimeManagerOptions } from '../runtime/manager.js';
import { parseConfig, type PlughostConfig, type PlughostConfigInput } from './config.js';
import { Inflight } from './inflight.js';
import { Invoker } from './invoker.js';
import { moduleService } from './module-service.js';
import { pluginService } from './plugin-service.js';
import { startServer, type RunningServer } from './server.js';
import type { StreamSession } from './stream-session.js';

export interface StartOptions {
  /** Where guest `log` calls go (default: dropped). */
  onGuestLog?: RuntimeManagerOptions['onGuestLog'];
}

export class Plughost {
  private closing: Promise<void> | undefined;

  private constructor(
    readonly config: PlughostConfig,
    readonly server: RunningServer,
    readonly manager: RuntimeManager,
    readonly registry: ModuleRegistry,
    readonly tokens: TokenStore,
    private readonly store: LmdbKvStore,
    private readonly sessions: Set<StreamSession>,
    private readonly inflight: Inflight,
    /** The admin token made on this start because there were none; shown once. */
    readonly createdAdminToken: string | undefined,
  ) {}

  static async start(input: PlughostConfigInput | PlughostConfig, options: StartOptions = {}): Promise<Plughost> {
    const config = parseConfig(input);
    const dataDir = resolve(config.dataDir);
    mkdirSync(dataDir, { recursive: true });
    const tokens = new TokenStore(join(dataDir, 'tokens.json'));
    const createdAdminToken = tokens.size === 0 ? tokens.add(ADMIN_GRANT).token : undefined;
    const store = new LmdbKvStore({ path: join(dataDir, 'kv'), commitMode: config.kv.commitMode, lockTimeoutMs: config.kv.lockTimeoutMs });
    let manager: RuntimeManager | undefined;
    try {
      manager = await RuntimeManager.create({
        store,
        workers: config.workers,
        caps: config.limits,
        acquireTimeoutMs: config.acquireTimeoutMs,
        hostCallTimeoutMs: config.hostCallTimeoutMs,
        idleTimeoutMs: config.idleTimeoutMs,
        maxControllers: config.maxControllers,
        workerHeapMb: config.workerHeapMb,
        onGuestLog: options.onGuestLog,
      });
      const registry = new ModuleRegistry({ dir: dataDir, manager, maxModuleBytes: config.maxModuleBytes });
      const sessions = new Set<StreamSession>();
      const inflight = new Inflight();
      const invoker = new Invoker(registry);
      const server = await startServer({
        listen: config.listen,
        tls: config.tls,
        ...config.grpc,
        services: [
          { desc: PluginService, impl: pluginService({ tokens, invoker, stream: config.stream, sessions, inflight }) },
          { desc: ModuleService, impl: moduleService({ tokens, registry, inflight }) },
        ],
        files: [file_plughost_v1_plugin, file_plughost_v1_module],
      });
      return new Plughost(config, server, manager, registry, tokens, store, sessions, inflight, createdAdminToken);
    } catch (e) {
      await manager?.close();
      await store.close();
      throw e;
    }
  }

  get address(): string {
    return this.server.address;
  }

  /**
   * Graceful shutdown within `graceMs` (default: the config's shutdownGraceMs): health goes
   * NOT_SERVING, streams stop taking items and finish the ones they have, unary calls in
   * flight finish; whatever is left at the bound is cancelled. Then runtime, then store.
   */
  close(graceMs = this.config.shutdownGraceMs): Promise<void> {
    this.closing ??= (async () => {
      const drained = Promise.all([...[...this.sessions].map((s) => s.shutdown()), this.inflight.idle()]);
      await this.server.close(graceMs, drained);
      await this.manager.close();
      await this.store.close();
    })();
    return this.closing;
  }
}
