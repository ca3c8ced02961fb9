// The example plugins (AssemblyScript and C, built offline by examples/build.ts) pushed and
// called through the real service, and pushed by `plughost serve` on first start.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { exampleModules } from '../src/cli/serve.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/kv.js';
import { clients, push, startPlughost } from './helpers/service.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

test('the examples are what their manifests say', (t) => {
  t.deepEqual(exampleModules().map((e) => `${e.name}@${e.version}`).sort(), ['stats@1.0.0', 'text@1.0.0']);
});

test('text (AssemblyScript): similarity, distance, and a KV counter per tenant with a read-only peek', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  const ex = exampleModules().find((e) => e.name === 'text')!;
  await push(admin, ex.name, ex.version, readFileSync(ex.wasm));
  const d = await admin.modules.describeModule({ module: 'text' });
  t.deepEqual(d.functions.map((f) => f.name ?? '(default)'), ['(default)', 'similarity', 'distance', 'count', 'peek']);
  t.deepEqual(d.functions.map((f) => f.writeable), [false, false, false, true, false]);
  t.regex(d.functions[1]!.comment!, /Levenshtein/);

  const call = async (c: typeof admin, fn: string | undefined, args: string) => (await c.plugins.invoke({ module: 'text', function: fn, args: enc(args) })).result;
  t.is(dec((await call(admin, 'similarity', 'kitten\nsitting')).value as Uint8Array), '0.571');
  t.is(dec((await call(admin, undefined, 'same\nsame')).value as Uint8Array), '1.000');
  t.is(dec((await call(admin, 'distance', 'flaw\nlawn')).value as Uint8Array), '2');
  t.like(await call(admin, 'similarity', 'one line only'), { case: 'guestError' });

  const other = clients(t, host.address, host.tokens.add({ subject: 'o', tenant: 'other', admin: false, modules: ['text'], kv: 'write' }).token);
  for (let i = 1; i <= 3; i++) t.is(dec((await call(admin, 'count', 'apple')).value as Uint8Array), String(i));
  t.is(dec((await call(other, 'count', 'apple')).value as Uint8Array), '1', 'another tenant has its own counters');
  t.is(dec((await call(admin, 'peek', 'apple')).value as Uint8Array), '3');
});

test('stats (C): Jaccard similarity, FNV-1a, and a KV counter', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  const ex = exampleModules().find((e) => e.name === 'stats')!;
  await push(c, ex.name, ex.version, readFileSync(ex.wasm));
  const d = await c.modules.describeModule({ module: 'stats' });
  t.deepEqual(d.functions.map((f) => f.name ?? '(default)'), ['(default)', 'jaccard', 'fnv1a', 'count']);
  t.deepEqual(d.functions.find((f) => f.name === 'count')?.args.map((a) => a.name), ['key']);
  const call = async (fn: string | undefined, args: Uint8Array) => (await c.plugins.invoke({ module: 'stats', function: fn, args })).result;
  t.is(dec((await call('jaccard', enc('the cat sat\nthe cat ran'))).value as Uint8Array), '0.500');
  t.is(dec((await call(undefined, enc('a b\nc d'))).value as Uint8Array), '0.000');
  const data = new Uint8Array(1000).map((_, i) => i * 31);
  const fnv = data.reduce((h, x) => Math.imul(h ^ x, 0x01000193) >>> 0, 0x811c9dc5);
  t.is(dec((await call('fnv1a', data)).value as Uint8Array), fnv.toString(16).padStart(8, '0'));
  t.is(dec((await call('count', enc('visits'))).value as Uint8Array), '1');
  t.is(dec((await call('count', enc('visits'))).value as Uint8Array), '2');
  const unknown = await t.throwsAsync(call('nope', enc('')));
  t.is(ConnectError.from(unknown).code, Code.NotFound);
  t.regex(unknown!.message, /stats has no function nope; it has: \(default\), jaccard, fnv1a, count/, 'refused before the guest runs');
});

test('plughost serve: the first start prints the admin token and pushes the examples; SIGTERM stops it cleanly', async (t) => {
  const dataDir = tempDir(t);
  const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', main, 'serve', '--listen', '127.0.0.1:0', '--data', dataDir], {
    env: { ...process.env, PLUGHOST_METRICS__LISTEN: '127.0.0.1:0', PLUGHOST_LOG__LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.teardown(() => child.kill('SIGKILL'));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d));
  const until = Date.now() + 30_000;
  while (!/example plugin pushed: stats/.test(err) || !/example plugin pushed: text/.test(err)) {
    if (Date.now() > until) return t.fail(`serve did not get ready: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const address = /listening on (\S+)/.exec(err)![1]!;
  const token = /shown once; only its hash is stored\):\s+(ph_\S+)/.exec(err)![1]!;
  const env = { PLUGHOST_ADDRESS: address, PLUGHOST_TOKEN: token };
  const inv = await runCli(['invoke', 'text', 'similarity', '--args', '-'], { env, input: 'plughost\nplughosts' });
  t.is(inv.stdout, '0.889\n', inv.stderr);
  const ls = await runCli(['ls'], { env });
  t.deepEqual(ls.stdout.trim().split('\n').map((l) => l.split(/\s+/)[0]), ['stats@1.0.0', 'text@1.0.0']);
  child.kill('SIGTERM');
  t.is(await exited, 0);
  t.regex(err, /SIGTERM: draining in-flight calls/);
  t.regex(err, /plughost stopped/);
});
