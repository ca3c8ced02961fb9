// `plughost serve`: the service on its configuration (file < environment < flags), the
// admin token shown once on first start, the example plugins pushed on first start, and a
// graceful stop on SIGINT/SIGTERM.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { messageOf } from '../errors.js';
import { loadConfig } from '../service/config-source.js';
import { Plughost } from '../service/plughost.js';
import { PACKAGE_ROOT } from '../util/paths.js';

/**
 * The package's examples/ folder: each example with a built plugin.wasm and its manifest.json
 * (not relative to this module: compiled, it is in dist/src/cli/).
 */
export const EXAMPLES_DIR = join(PACKAGE_ROOT, 'examples');

export interface ExampleModule {
  dir: string;
  name: string;
  version: string;
  wasm: string;
}

export function exampleModules(dir = EXAMPLES_DIR): ExampleModule[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, 'plugin.wasm')) && existsSync(join(dir, d.name, 'manifest.json')))
    .map((d) => {
      const m = JSON.parse(readFileSync(join(dir, d.name, 'manifest.json'), 'utf8')) as { name: string; version: string };
      return { dir: join(dir, d.name), name: m.name, version: m.version, wasm: join(dir, d.name, 'plugin.wasm') };
    });
}

export async function serve(o: { config?: string; listen?: string; data?: string; examples: boolean }): Promise<Plughost> {
  const config = loadConfig({
    file: o.config,
    env: process.env,
    flags: { ...(o.listen ? { listen: o.listen } : {}), ...(o.data ? { dataDir: o.data } : {}) },
  });
  const host = await Plughost.start(config);
  const out = (line = '') => process.stderr.write(`${line}\n`);
  out(`plughost listening on ${host.address} (${host.config.store === 'lmdb' ? `data: ${host.config.dataDir}` : 'store: PostgreSQL'}${host.metricsServer ? `, metrics: http://${host.metricsServer.address}/metrics` : ''})`);
  if (host.createdAdminToken) {
    out(`\nAn admin token was created (shown once; only its hash is stored):\n\n  ${host.createdAdminToken}\n`);
    out(`Use it as gRPC metadata, e.g.:\n  grpcurl -plaintext -H 'authorization: Bearer ${host.createdAdminToken}' ${host.address} plughost.v1.ModuleService/ListModules\n`);
    if (o.examples) {
      for (const ex of exampleModules()) {
        try {
          const { entry } = await host.registry.push({ name: ex.name, version: ex.version }, readFileSync(ex.wasm));
          out(`example plugin pushed: ${entry.name}@${entry.version} ${entry.hash}`);
        } catch (e) {
          out(`example plugin ${ex.name} was not pushed: ${messageOf(e)}`);
        }
      }
    }
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    out(`${signal}: draining in-flight calls (up to ${host.config.shutdownGraceMs} ms), then stopping`);
    host.close().then(
      () => {
        out('plughost stopped');
        process.exit(0);
      },
      (e: unknown) => {
        out(`plughost: stopping failed: ${messageOf(e)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  return host;
}
