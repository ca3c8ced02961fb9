#!/usr/bin/env node
// The `plughost` command. `serve` starts the service on its embedded defaults.
import { parseArgs } from 'node:util';
import { messageOf } from '../errors.js';
import { Plughost } from '../service/plughost.js';

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      data: { type: 'string' },
    },
  });
  const host = await Plughost.start({
    ...(values.listen ? { listen: values.listen } : {}),
    ...(values.data ? { dataDir: values.data } : {}),
  });
  console.log(`plughost listening on ${host.address} (data: ${host.config.dataDir})`);
  if (host.createdAdminToken) {
    console.log(`\nAn admin token was created (shown once; only its hash is stored):\n\n  ${host.createdAdminToken}\n`);
    console.log(`Use it as gRPC metadata, e.g.:\n  grpcurl -plaintext -H 'authorization: Bearer ${host.createdAdminToken}' ${host.address} plughost.v1.ModuleService/ListModules\n`);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: draining in-flight calls (up to ${host.config.shutdownGraceMs} ms), then stopping`);
    host.close().then(() => {
      console.log('plughost stopped');
      process.exit(0);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

const [command, ...rest] = process.argv.slice(2);
try {
  switch (command) {
    case 'serve':
      await serve(rest);
      break;
    default:
      console.error(`usage: plughost serve [--listen host:port] [--data dir]`);
      process.exit(2);
  }
} catch (e) {
  console.error(`plughost: ${messageOf(e)}`);
  process.exit(1);
}
