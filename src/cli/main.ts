#!/usr/bin/env node
// The `plughost` command. `serve` starts the service on its embedded defaults.
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startServer } from '../service/server.js';

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', default: '127.0.0.1:50051' },
      data: { type: 'string', default: './data' },
    },
  });
  const dataDir = resolve(values.data);
  mkdirSync(dataDir, { recursive: true });
  const server = await startServer({ listen: values.listen });
  console.log(`plughost listening on ${server.address} (data: ${dataDir})`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: draining in-flight calls, then stopping`);
    server.close().then(() => {
      console.log('plughost stopped');
      process.exit(0);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

const [command, ...rest] = process.argv.slice(2);
switch (command) {
  case 'serve':
    await serve(rest);
    break;
  default:
    console.error(`usage: plughost serve [--listen host:port] [--data dir]`);
    process.exit(2);
}
