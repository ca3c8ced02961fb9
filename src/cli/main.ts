// The `plughost` command: serve the service, or talk to a running one (push, ls,
// describe, delete, invoke, stream, bench), or edit its tokens. Errors print one line
// on stderr and exit non-zero (3 when the guest answered with its own error).
import { Command, InvalidArgumentError, Option } from 'commander';
import { describeError, connect, type Connection, type ConnectionOptions } from './client.js';
import { invoke, stream } from './call-commands.js';
import { loadAnswers } from './sql-answers.js';
import { runLoad } from './load.js';
import { describe, list, push, remove } from './module-commands.js';
import { serve } from './serve.js';
import { addToken, listTokens, removeToken } from './token-commands.js';
import { readArgs } from './values.js';

const positiveInt = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive whole number`);
  return n;
};

const program = new Command('plughost')
  .description('Runs WebAssembly component plugins for a database engine, over gRPC')
  .showHelpAfterError()
  .configureOutput({ outputError: (s, write) => write(`plughost: ${s.replace(/^error: /, '')}`) });

/** A client command: global connection options, one connection, closed afterwards, one-line errors. */
function clientCommand(name: string) {
  return program
    .command(name)
    .addOption(new Option('--address <host:port>', 'the server').env('PLUGHOST_ADDRESS').default('127.0.0.1:50051'))
    .addOption(new Option('--token <token>', 'bearer token').env('PLUGHOST_TOKEN'))
    .addOption(new Option('--tls-ca <file>', 'connect with TLS, trusting this CA certificate (PEM)'))
    .addOption(new Option('--timeout <ms>', 'deadline of each call').argParser(positiveInt('--timeout')));
}

async function withConnection(opts: ConnectionOptions, run: (c: Connection) => Promise<number | void>): Promise<void> {
  const c = connect(opts);
  try {
    process.exitCode = (await run(c)) ?? 0;
  } finally {
    c.close();
  }
}

const say = (line: string): void => void process.stdout.write(`${line}\n`);

program
  .command('serve')
  .description('start the service (configuration: --config file, then PLUGHOST_* environment, then flags)')
  .option('--config <file>', 'YAML or JSON configuration file')
  .option('--listen <host:port>', 'gRPC address (default 127.0.0.1:50051)')
  .option('--data <dir>', 'data directory: modules, tokens, KV (default ./data)')
  .option('--no-examples', 'do not push the example plugins on first start')
  .action(async (o: { config?: string; listen?: string; data?: string; examples: boolean }) => {
    await serve(o);
  });

clientCommand('push')
  .description('push a component (.wasm) as name@version')
  .argument('<file>', 'the component')
  .requiredOption('--name <name>', 'module name')
  .requiredOption('--version <version>', 'semantic version, e.g. 1.0.0')
  .option('--limits <json|@file>', 'per-module limits, e.g. \'{"maxExecutionMs":500}\'')
  .option('--expected-hash <sha256:hex>', 'refuse the push unless the bytes have this hash')
  .option('--no-progress', 'no progress bar')
  .action((file: string, o) => withConnection(o, async (c) => say((await push(c, file, { ...o, progress: o.progress && process.stderr.isTTY })).line)));

clientCommand('ls')
  .description('list modules (name@version, hash, size, pushed)')
  .argument('[name]', 'only this module name')
  .action((name: string | undefined, o) => withConnection(o, async (c) => (await list(c, name)).forEach(say)));

clientCommand('describe')
  .description('a module: its functions, limits and pool state')
  .argument('<module>', 'hash, name@version or name')
  .action((module: string, o) => withConnection(o, async (c) => (await describe(c, module)).forEach(say)));

clientCommand('delete')
  .description('delete name@version, or a hash with all its aliases')
  .argument('<module>')
  .action((module: string, o) => withConnection(o, async (c) => say(await remove(c, module))));

clientCommand('invoke')
  .description('call a function once; prints its value (UTF-8, else base64:...)')
  .argument('<module>', 'hash, name@version or name')
  .argument('[fn]', 'function (default: the default function)')
  .option('--args <json|@file|->', 'args: JSON text, @file for a file\'s bytes, - for standard input')
  .action((module: string, fn: string | undefined, o) =>
    withConnection(o, async (c) => {
      const r = await invoke(c, module, fn, readArgs(o.args));
      if (r.guestError !== undefined) {
        process.stderr.write(`guest error: ${r.guestError}\n`);
        return 3;
      }
      say(r.out);
    }),
  );

clientCommand('stream')
  .description('a streamed batch: NDJSON items on stdin ({"id":1,"args":...}), NDJSON results on stdout')
  .argument('<module>', 'hash, name@version or name')
  .argument('[fn]', 'function for every item (an item may name its own "fn")')
  .option('--window <n>', 'rows in flight at once (server default when absent; with --batch, four batches)', positiveInt('--window'))
  .option('--ordered', 'results in input order (default: as they finish)', false)
  .option('--batch <n>', 'send up to n consecutive items for the same module and function as one batch message', positiveInt('--batch'))
  .option('--serve-sql <file>', 'answer the guests\' sql as the engine, from a JSON array of {"query", "vars"?, "value" or "error"} (the first rule that matches)')
  .action((module: string, fn: string | undefined, o) => {
    // read and checked before connecting: a bad file is one error line, no stream opened
    const serveSql = o.serveSql === undefined ? undefined : loadAnswers(o.serveSql);
    return withConnection(o, async (c) => {
      const say = (m: string) => process.stderr.write(`plughost: ${m}\n`);
      const r = await stream(c, { module, fn, window: o.window, ordered: o.ordered, batch: o.batch, serveSql }, process.stdin, process.stdout, (m) => say(`${m} (skipped)`), say);
      process.stderr.write(`${r.answered} results for ${r.sent} items (${r.failed} failed)${r.badLines ? `; ${r.badLines} bad input lines skipped` : ''}\n`);
      return r.badLines > 0 || r.answered !== r.sent ? 1 : 0;
    });
  });

clientCommand('bench')
  .description('a bounded load against a running server: calls/s and latency')
  .argument('<module>')
  .argument('[fn]')
  .addOption(new Option('--mode <mode>', 'unary calls, or one Stream').choices(['unary', 'stream']).default('unary'))
  .option('--concurrency <n>', 'calls in flight (unary) or items outstanding (stream)', positiveInt('--concurrency'), 16)
  .option('--seconds <n>', 'how long', positiveInt('--seconds'), 5)
  .option('--bytes <n>', 'args size (bytes of a repeating pattern)', (v) => (v === '0' ? 0 : positiveInt('--bytes')(v)), 64)
  .action((module: string, fn: string | undefined, o) =>
    withConnection(o, async (c) => {
      const r = await runLoad({ address: o.address, token: o.token ?? '', mode: o.mode, concurrency: o.concurrency, seconds: o.seconds, bytes: o.bytes, module, function: fn, ca: c.ca });
      say(`${r.ops} calls in ${r.seconds.toFixed(1)} s: ${r.opsPerSec.toFixed(0)}/s, p50 ${(r.p50Us / 1000).toFixed(2)} ms, p99 ${(r.p99Us / 1000).toFixed(2)} ms, ${r.errors} not ok`);
      return r.errors > 0 ? 1 : 0;
    }),
  );

const tokens = program.command('tokens').description('manage bearer tokens in a data directory or the shared PostgreSQL store (a running server sees changes within a second)');
const dataOption = () => new Option('--data <dir>', 'data directory').env('PLUGHOST_DATA_DIR').default('./data');
const storeOption = () => new Option('--store <store>', 'lmdb (the data directory), or the PostgreSQL URL the replicas share').env('PLUGHOST_STORE');
tokens
  .command('add')
  .description('create a token; prints it once')
  .addOption(dataOption())
  .addOption(storeOption())
  .requiredOption('--subject <name>', 'who it is for (logs)')
  .requiredOption('--tenant <name>', 'KV scope of its calls')
  .option('--admin', 'may push and delete modules', false)
  .option('--modules <globs>', 'comma-separated module name globs it may invoke', '*')
  .addOption(new Option('--kv <access>', 'KV access').choices(['none', 'read', 'write']).default('write'))
  .action(async (o) => {
    const { id, token } = await addToken(o, o);
    say(token);
    process.stderr.write(`token ${id} added for ${o.subject} (tenant ${o.tenant}); it is shown only now\n`);
  });
tokens.command('ls').description('list tokens (never their values)').addOption(dataOption()).addOption(storeOption()).action(async (o) => (await listTokens(o)).forEach(say));
tokens.command('rm').description('remove a token by id').argument('<id>').addOption(dataOption()).addOption(storeOption()).action(async (id: string, o) => {
  await removeToken(o, id);
  say(`token ${id} removed`);
});

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.stderr.write(`plughost: ${describeError(e)}\n`);
  process.exitCode = 1;
}
