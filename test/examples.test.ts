// The example plugins (AssemblyScript and C, built offline by examples/build.ts) pushed and
// called through the real service, and pushed by `plughost serve` on first start.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { exampleModules } from '../src/cli/serve.js';
import { runCli } from './helpers/cli.js';
import { inThreadGuest, mapKv, type BatchRow } from './helpers/in-thread.js';
import { lmdbStore, tempDir } from './helpers/kv.js';
import { ctx, manager } from './helpers/runtime.js';
import { clients, push, startPlughost } from './helpers/service.js';
import { Feed, answer, describe, item, options } from './helpers/stream.js';
import type { RowOutcome } from '../src/runtime/runtime.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => new TextDecoder().decode(b);
const example = (name: string) => readFileSync(exampleModules().find((e) => e.name === name)!.wasm);
/** A batch answer as text: "ok <value>" or "err <message>". */
const rowText = (r: BatchRow) => (r.tag === 'ok' ? `ok ${dec(r.val)}` : `err ${r.val}`);
const outcomeText = (o: RowOutcome) => (o.ok ? `ok ${dec(o.value)}` : 'guestError' in o ? `err ${o.guestError}` : `failure ${o.failure.code}`);
const fnvHex = (data: Uint8Array) => data.reduce((h, x) => Math.imul(h ^ x, 0x01000193) >>> 0, 0x811c9dc5).toString(16).padStart(8, '0');

test('the examples are what their manifests say', (t) => {
  t.deepEqual(exampleModules().map((e) => `${e.name}@${e.version}`).sort(), ['stats@1.0.0', 'text@1.0.0']);
});

test('text (AssemblyScript): similarity, distance, and a KV counter per tenant with a read-only peek', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  const ex = exampleModules().find((e) => e.name === 'text')!;
  await push(admin, ex.name, ex.version, readFileSync(ex.wasm));
  const d = await admin.modules.describeModule({ module: 'text' });
  t.deepEqual(d.functions.map((f) => f.name ?? '(default)'), ['(default)', 'similarity', 'distance', 'count', 'peek', 'enrich']);
  t.deepEqual(d.functions.map((f) => f.writeable), [false, false, false, true, false, false]);
  t.regex(d.functions[1]!.comment!, /Levenshtein/);

  const call = async (c: typeof admin, fn: string | undefined, args: string) => (await c.plugins.invoke({ module: 'text', function: fn, args: enc(args) })).result;
  t.is(dec((await call(admin, 'similarity', 'kitten\nsitting')).value as Uint8Array), '0.571');
  t.is(dec((await call(admin, undefined, 'same\nsame')).value as Uint8Array), '1.000');
  t.is(dec((await call(admin, 'distance', 'flaw\nlawn')).value as Uint8Array), '2');
  t.like(await call(admin, 'similarity', 'one line only'), { case: 'guestError' });

  const other = clients(t, host.address, (await host.tokens.add({ subject: 'o', tenant: 'other', admin: false, modules: ['text'], kv: 'write' })).token);
  for (let i = 1; i <= 3; i++) t.is(dec((await call(admin, 'count', 'apple')).value as Uint8Array), String(i));
  t.is(dec((await call(other, 'count', 'apple')).value as Uint8Array), '1', 'another tenant has its own counters');
  t.is(dec((await call(admin, 'peek', 'apple')).value as Uint8Array), '3');
});

test('text enrich: a row enriched by the engine\'s answer over a Stream that serves sql; over Invoke the guest passes on the host\'s err', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  const ex = exampleModules().find((e) => e.name === 'text')!;
  await push(c, ex.name, ex.version, readFileSync(ex.wasm));
  const invoked = await c.plugins.invoke({ module: 'text', function: 'enrich', args: enc('{"id":"tobie"}') });
  t.is(invoked.result.case, 'guestError');
  t.regex(invoked.result.value as string, /^sql is not available: only an engine that opened a Stream serving queries/);

  const people: Record<string, string> = { tobie: '{"name":"Tobie","city":"London"}' };
  const feed = new Feed();
  feed.send(options({ module: 'text', function: 'enrich', serveSql: true }), item(1, { args: enc('{"id":"tobie","score":3}') }), item(2, { args: enc('{"id":"nobody"}') }));
  const outcomes = new Map<bigint, string>();
  const queries: string[] = [];
  for await (const r of c.plugins.stream(feed)) {
    const h = r.hostCall;
    if (h) {
      queries.push(h.query);
      const id = (JSON.parse(dec(h.vars)) as { id: string }).id;
      feed.send(answer(h.hostCallId, people[id] ? { ok: enc(people[id]) } : { error: `no person ${id}` }));
    } else if (r.outcome) {
      outcomes.set(r.id, describe(r.outcome));
      if (outcomes.size === 2) feed.end();
    }
  }
  t.deepEqual(queries, ['SELECT name, city FROM person WHERE id = $id', 'SELECT name, city FROM person WHERE id = $id']);
  t.is(outcomes.get(1n), '{"row":{"id":"tobie","score":3},"person":{"name":"Tobie","city":"London"}}');
  t.is(outcomes.get(2n), 'guest:no person nobody');
});

test('stats (C): Jaccard similarity, FNV-1a, and a KV counter', async (t) => {
  const host = await startPlughost(t);
  const c = clients(t, host.address, host.createdAdminToken);
  const ex = exampleModules().find((e) => e.name === 'stats')!;
  await push(c, ex.name, ex.version, readFileSync(ex.wasm));
  const d = await c.modules.describeModule({ module: 'stats' });
  t.deepEqual(d.functions.map((f) => f.name ?? '(default)'), ['(default)', 'jaccard', 'fnv1a', 'count', 'compare']);
  t.deepEqual(d.functions.find((f) => f.name === 'count')?.args.map((a) => a.name), ['key']);
  const call = async (fn: string | undefined, args: Uint8Array) => (await c.plugins.invoke({ module: 'stats', function: fn, args })).result;
  t.is(dec((await call('jaccard', enc('the cat sat\nthe cat ran'))).value as Uint8Array), '0.500');
  t.is(dec((await call(undefined, enc('a b\nc d'))).value as Uint8Array), '0.000');
  const data = new Uint8Array(1000).map((_, i) => i * 31);
  t.is(dec((await call('fnv1a', data)).value as Uint8Array), fnvHex(data));
  t.is(dec((await call('count', enc('visits'))).value as Uint8Array), '1');
  t.is(dec((await call('count', enc('visits'))).value as Uint8Array), '2');
  const unknown = await t.throwsAsync(call('nope', enc('')));
  t.is(ConnectError.from(unknown).code, Code.NotFound);
  t.regex(unknown!.message, /stats has no function nope; it has: \(default\), jaccard, fnv1a, count, compare/, 'refused before the guest runs');
});

test('stats compare composes both examples with run: its own Jaccard and text\'s Levenshtein, under the caller\'s token', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  for (const ex of exampleModules()) await push(admin, ex.name, ex.version, readFileSync(ex.wasm));
  const compare = async (c: typeof admin, args: string) => (await c.plugins.invoke({ module: 'stats', function: 'compare', args: enc(args) })).result;
  const both = await compare(admin, 'kitten sat\nsitting sat');
  t.is(dec(both.value as Uint8Array), 'jaccard 0.333, levenshtein 0.727');
  t.deepEqual(await compare(admin, 'one line'), { case: 'guestError', value: 'jaccard takes two lines of text: a, a newline, then b' });
  // a token for stats alone may not reach text through it
  const statsOnly = clients(t, host.address, (await host.tokens.add({ subject: 'engine', tenant: 't1', admin: false, modules: ['stats'], kv: 'read' })).token);
  t.deepEqual(await compare(statsOnly, 'a\nb'), { case: 'guestError', value: 'run text: engine may not invoke text (its token allows stats)' });
});

test('invoke-batch of both examples, called in-thread through jco: one result per row in row order, as invoke answers each row', async (t) => {
  // enrich's sql, answered here as a served stream would: the person of the row's id, or an err
  const sql = (query: string, vars: Uint8Array) =>
    query === 'SELECT name, city FROM person WHERE id = $id' && JSON.parse(dec(vars)).id === 'tobie' ? { tag: 'ok', val: enc('{"name":"Tobie"}') } : { tag: 'err', val: `no person in ${dec(vars)}` };
  const text = await inThreadGuest(example('text'), { ...mapKv(), sql });
  const sim = ['kitten\nsitting', 'same\nsame', 'one line only', '\n'].map(enc);
  t.deepEqual(text.invokeBatch(undefined, sim).map(rowText), ['ok 0.571', 'ok 1.000', 'err similarity takes two lines of text: a, a newline, then b', 'ok 1.000']);
  t.deepEqual(text.invokeBatch('distance', ['flaw\nlawn', 'kitten\nsitting'].map(enc)).map(rowText), ['ok 2', 'ok 3']);
  t.deepEqual(text.invokeBatch('count', ['apple', 'apple', '', 'pear'].map(enc)).map(rowText), ['ok 1', 'ok 2', 'err count takes a word', 'ok 1'], 'a row sees the rows before it');
  t.deepEqual(text.invokeBatch('peek', ['apple'].map(enc)).map(rowText), ['ok 2']);
  t.deepEqual(text.invokeBatch('similarity', []), []);
  t.deepEqual(text.invokeBatch('', [enc('a\nb')]).map(rowText), ['err no function ; try similarity, distance, count, peek or enrich'], 'an empty name (which jco passes unallocated) is only an unknown function');
  t.deepEqual(text.invokeBatch('enrich', ['{"id":"tobie"}', '{"id":"x"}', ''].map(enc)).map(rowText), [
    'ok {"row":{"id":"tobie"},"person":{"name":"Tobie"}}',
    'err no person in {"id":"x"}',
    'err enrich takes a row: a JSON object with an id',
  ]);
  t.deepEqual([0, 1, 3].map((i) => dec(text.invoke(undefined, sim[i]!))), ['0.571', '1.000', '1.000']);

  const stats = await inThreadGuest(example('stats'), { ...mapKv(), run: () => ({ tag: 'err', val: 'no run in this thread' }) });
  const data = [new Uint8Array(), enc('hello'), new Uint8Array(1000).map((_, i) => i * 31)];
  t.deepEqual(stats.invokeBatch('fnv1a', data).map(rowText), data.map((d) => `ok ${fnvHex(d)}`));
  t.deepEqual(stats.invokeBatch(undefined, ['the cat sat\nthe cat ran', 'no newline', 'a b\nc d'].map(enc)).map(rowText), ['ok 0.500', 'err jaccard takes two lines of text: a, a newline, then b', 'ok 0.000']);
  t.deepEqual(stats.invokeBatch('count', ['visits', 'visits', ''].map(enc)).map(rowText), ['ok 1', 'ok 2', 'err count takes a key']);
  t.deepEqual(stats.invokeBatch('nope', [enc('a'), enc('b')]).map(rowText), ['err no such function; try jaccard, fnv1a, count or compare', 'err no such function; try jaccard, fnv1a, count or compare']);
  t.deepEqual(stats.invokeBatch('', [enc('a')]).map(rowText), ['err no such function; try jaccard, fnv1a, count or compare'], 'an empty name is only an unknown function');
  t.is(dec(stats.invoke('fnv1a', enc('hello'))), '4f9f2cab', 'the instance still serves single calls');
});

test('Runtime.invokeBatch of both examples: row values in row order, an err row fails alone, and KV writes of the other rows stay', async (t) => {
  const store = lmdbStore(t);
  const m = await manager(t, { store });
  const [text, stats] = await Promise.all([m.load(example('text'), { name: 'text' }), m.load(example('stats'), { name: 'stats' })]);
  const run = async (rt: typeof text, fn: string | undefined, rows: string[]) => (await rt.invokeBatch(ctx(), fn, rows.map(enc))).map(outcomeText);
  t.deepEqual(await run(text, 'similarity', ['kitten\nsitting', 'one line only', 'plughost\nplughosts']), ['ok 0.571', 'err similarity takes two lines of text: a, a newline, then b', 'ok 0.889']);
  t.deepEqual(await run(stats, 'fnv1a', ['', 'hello']), ['ok 811c9dc5', 'ok 4f9f2cab']);
  t.deepEqual(await run(stats, 'count', ['k1', '', 'k2']), ['ok 1', 'err count takes a key', 'ok 1']);
  t.deepEqual(await run(stats, 'count', ['k1', 'k2']), ['ok 2', 'ok 2'], 'the first batch\'s writes were committed');
  t.deepEqual(await run(text, 'count', ['apple', '']), ['ok 1', 'err count takes a word']);
  t.deepEqual(await run(text, 'peek', ['apple']), ['ok 1']);
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
