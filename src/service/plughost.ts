// The whole service, composed from one validated configuration: the KV store, the runtime,
// the registry, the tokens and the gRPC server. It owns all of them; `close()` shuts them
// down in order: stop accepting, drain streams and calls, then the runtime, then the store.
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { file_plughost_v1_module, ModuleService } from '../../gen/plughost/v1/module_pb.js';
import { file_plughost_v1_plugin, PluginService } from '../../gen/plughost/v1/plugin_pb.js';
import { ADMIN_GRANT, type TokenStore } from '../auth/tokens.js';
import { ModuleRegistry } from '../registry/registry.js';
import { RuntimeManager } from '../runtime/manager.js';
import { openBackend, type Backend } from './backend.js';
import { parseConfig, runtimeOptionsOf, type PlughostConfig, type PlughostConfigInput } from './config.js';
import { Inflight } from './inflight.js';
import { Invoker, RESPONSE_ENVELOPE_BYTES } from './invoker.js';
import { createLogger, type Logger } from './logger.js';
import { Metrics, serveMetrics } from './metrics.js';
import { moduleService } from './module-service.js';
import { pluginService } from './plugin-service.js';
import { startServer, type RunningServer } from './server.js';
import { encodeStreamResponse } from './stream-wire.js';
import { restoreWorkerOutputSink, setWorkerOutputSink, type WorkerOutputSink } from '../util/worker-output.js';
import type { StreamSession } from './stream-session.js';

export interface StartOptions {
  /** Where log lines go (default: a pino logger on stdout at the config's log.level). */
  logger?: Logger;
}

const GUEST_LOG_LEVEL = { trace: 'trace', debug: 'debug', info: 'info', warn: 'warn', error: 'error' } as const;

export class Plughost {
  private closing: Promise<void> | undefined;

  private constructor(
    readonly config: PlughostConfig,
    readonly server: RunningServer,
    readonly manager: RuntimeManager,
    readonly registry: ModuleRegistry,
    readonly tokens: TokenStore,
    private readonly backend: Backend,
    private readonly sessions: Set<StreamSession>,
    private readonly inflight: Inflight,
    /** The admin token made on this start because there were none; shown once. */
    readonly createdAdminToken: string | undefined,
    readonly metrics: Metrics,
    /** Where Prometheus scrapes, when metrics are on. */
    readonly metricsServer: { address: string; close(): Promise<void> } | undefined,
    readonly logger: Logger,
  ) {}

  static async start(input: PlughostConfigInput | PlughostConfig, options: StartOptions = {}): Promise<Plughost> {
    const config = parseConfig(input);
    const dataDir = resolve(config.dataDir);
    mkdirSync(dataDir, { recursive: true });
    const logger = options.logger ?? createLogger(config.log.level);
    // the data directory, or the PostgreSQL that replicas share
    const backend = await openBackend(config, dataDir, logger);
    const { store, tokens } = backend;
    // what runtime and transpiler workers print themselves goes to the log, never raw to stderr
    const sink: WorkerOutputSink = ({ worker, stream, line }) => logger.warn({ worker, stream }, line);
    const previousSink = setWorkerOutputSink(sink);
    const metrics = new Metrics();
    let manager: RuntimeManager | undefined;
    let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;
    try {
      manager = await RuntimeManager.create({
        ...runtimeOptionsOf(config),
        store,
        observer: metrics.observer,
        onGuestLog: ({ level, message, ctx, module }) =>
          logger[GUEST_LOG_LEVEL[level] ?? 'info']({ reqId: ctx.requestId, subject: ctx.subject, module, guest: true }, message),
      });
      metrics.watch(manager);
      const registry = new ModuleRegistry({ storage: backend.modules, manager, maxModuleBytes: config.maxModuleBytes });
      await backend.watch(registry);
      const createdAdminToken = (await tokens.addFirst(ADMIN_GRANT))?.token;
      const sessions = new Set<StreamSession>();
      const inflight = new Inflight();
      const invoker = new Invoker(registry, { metrics, logger }, config.grpc.maxSendMessageBytes - RESPONSE_ENVELOPE_BYTES);
      const server = await startServer({
        listen: config.listen,
        tls: config.tls,
        ...config.grpc,
        services: [
          {
            desc: PluginService,
            impl: pluginService({ tokens, invoker, stream: { ...config.stream, maxResponseBytes: config.grpc.maxSendMessageBytes }, sessions, inflight, observeHostCall: metrics.hostCallObserver }),
            responseSerializers: { stream: encodeStreamResponse },
          },
          { desc: ModuleService, impl: moduleService({ tokens, registry, inflight, logger }) },
        ],
        files: [file_plughost_v1_plugin, file_plughost_v1_module],
      });
      if (config.metrics.listen) {
        try {
          metricsServer = await serveMetrics(metrics, config.metrics.listen);
        } catch (e) {
          await server.close(0);
          throw e;
        }
      }
      logger.info({ address: server.address, metrics: metricsServer?.address, dataDir, store: backend.kind, workers: manager.workers.length }, 'plughost listening');
      const plughost = new Plughost(config, server, manager, registry, tokens, backend, sessions, inflight, createdAdminToken, metrics, metricsServer, logger);
      plughost.releaseOutput = () => restoreWorkerOutputSink(sink, previousSink);
      return plughost;
    } catch (e) {
      restoreWorkerOutputSink(sink, previousSink);
      await metricsServer?.close();
      await manager?.close();
      await backend.close();
      throw e;
    }
  }

  /** Streams open now (for operators and tests: each holds a window of calls at most). */
  get openStreams(): number {
    return this.sessions.size;
  }

  /** Stream rows (an item is one) pulled from clients whose answers have not yet left grpc-js, over every open stream. */
  get streamRowsInFlight(): number {
    let n = 0;
    for (const s of this.sessions) n += s.inFlight;
    return n;
  }

  /** Gives workers' output back to the sink there was before this service started. */
  private releaseOutput = () => {};

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
      const deadline = Date.now() + graceMs;
      this.inflight.drain();
      const drained = Promise.all([...[...this.sessions].map((s) => s.shutdown()), this.inflight.idle()]);
      await this.server.close(graceMs, drained);
      await this.metricsServer?.close();
      // calls still running past the grace period fail with UNAVAILABLE and their workers stop
      await this.manager.close(Math.max(0, deadline - Date.now()));
      await this.backend.close();
      this.releaseOutput();
      this.logger.info('plughost stopped');
      this.logger.flush();
    })();
    return this.closing;
  }
}
