// The `plughost` command end to end: a real server on 127.0.0.1, the CLI in a child
// process, real components.
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixture } from './fixtures/build.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/kv.js';
import { startPlughost } from './helpers/service.js';

async function setup(t: Parameters<typeof startPlughost>[0], config: Parameters<typeof startPlughost>[1] = {}) {
  const host = await startPlughost(t, config);
  const dir = tempDir(t);
  const files: Record<string, string> = {};
  for (const name of ['echo', 'introspect', 'faults', 'kv']) {
    files[name] = join(dir, `${name}.wasm`);
    writeFileSync(files[name], await fixture(name));
  }
  const env = { PLUGHOST_ADDRESS: host.address, PLUGHOST_TOKEN: host.createdAdminToken! };
  return { host, files, env };
}

test('push, ls, describe, invoke and delete through the CLI; errors are one line with a non-zero exit', async (t) => {
  const { files, env } = await setup(t);
  const pushed = await runCli(['push', files.introspect!, '--name', 'intro', '--version', '1.2.0', '--limits', '{"maxExecutionMs":750}'], { env });
  t.is(pushed.code, 0, pushed.stderr);
  t.regex(pushed.stdout, /^pushed intro@1\.2\.0 sha256:[0-9a-f]{64} \(\d+ bytes\)\n$/);
  t.is((await runCli(['push', files.echo!, '--name', 'echo', '--version', '1.0.0'], { env })).code, 0);

  const ls = await runCli(['ls'], { env });
  t.is(ls.code, 0, ls.stderr);
  t.deepEqual(ls.stdout.trim().split('\n').map((l) => l.split(/\s+/)[0]), ['echo@1.0.0', 'intro@1.2.0']);

  const d = await runCli(['describe', 'intro'], { env });
  t.is(d.code, 0, d.stderr);
  t.regex(d.stdout, /maxExecutionMs=750/);
  t.regex(d.stdout, /add\(a: u32, b: u32\) -> u32 {2}\[writes KV\]/);
  t.regex(d.stdout, /pool: 0 in use, 1 idle/);

  const inv = await runCli(['invoke', 'echo', '--args', '{"hello":"world"}'], { env });
  t.is(inv.code, 0, inv.stderr);
  t.is(inv.stdout, '{"hello":"world"}\n');
  const fromStdin = await runCli(['invoke', 'echo', 'any', '--args', '-'], { env, input: 'raw bytes' });
  t.is(fromStdin.stdout, 'raw bytes\n');

  const badJson = await runCli(['invoke', 'echo', '--args', '{nope'], { env });
  t.is(badJson.code, 1);
  t.regex(badJson.stderr, /^plughost: INVALID_ARGUMENT: --args is not JSON/);
  const missing = await runCli(['invoke', 'nope'], { env });
  t.is(missing.code, 1);
  t.is(missing.stderr, 'plughost: NotFound NOT_FOUND: no module named nope\n');
  const noToken = await runCli(['ls'], { env: { ...env, PLUGHOST_TOKEN: 'ph_wrong' } });
  t.is(noToken.code, 1);
  t.regex(noToken.stderr, /^plughost: Unauthenticated UNAUTHENTICATED: .*--token/);

  const del = await runCli(['delete', 'echo@1.0.0'], { env });
  t.is(del.code, 0, del.stderr);
  t.regex(del.stdout, /deleted echo@1\.0\.0; the module bytes are gone too/);
  t.is((await runCli(['ls'], { env })).stdout.trim().split('\n').length, 1);
});

test('invoke: a guest error prints the guest\'s message and exits 3; a trap exits 1 with its status', async (t) => {
  const { files, env } = await setup(t);
  t.is((await runCli(['push', files.faults!, '--name', 'faults', '--version', '1.0.0'], { env })).code, 0);
  const err = await runCli(['invoke', 'faults', 'err'], { env });
  t.is(err.code, 3);
  t.regex(err.stderr, /^guest error: /);
  const trap = await runCli(['invoke', 'faults', 'trap'], { env });
  t.is(trap.code, 1);
  t.regex(trap.stderr, /^plughost: Aborted TRAP: /);
});

test('stream: NDJSON items in, one NDJSON result per item out, in order when asked; a bad line is skipped and reported', async (t) => {
  const { files, env } = await setup(t);
  t.is((await runCli(['push', files.faults!, '--name', 'faults', '--version', '1.0.0'], { env })).code, 0);
  t.is((await runCli(['push', files.echo!, '--name', 'echo', '--version', '1.0.0'], { env })).code, 0);
  // the stream's module is echo; items 2 and 4 name faults for themselves
  const lines = [
    '{"id":1,"args":{"n":1}}',
    '{"id":2,"module":"faults","fn":"err"}',
    'this is not json',
    '{"id":4,"module":"faults","fn":"trap"}',
    '{"args_base64":"/wA="}',
    '',
    '{"id":6,"args":[1,2,3]}',
  ];
  const r = await runCli(['stream', 'echo', '--ordered', '--window', '4'], { env, input: lines.join('\n') + '\n' });
  t.is(r.code, 1, 'a skipped line makes the exit non-zero');
  const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(out.map((o) => o.id), [1, 2, 4, 5, 6]);
  t.deepEqual(out[0], { id: 1, value: { n: 1 } });
  t.is(typeof out[1]!.guest_error, 'string');
  t.is(out[2]!.failure, 'TRAP');
  t.deepEqual(out[3], { id: 5, value_base64: '/wA=' }, 'bytes that are not UTF-8 JSON come back as base64');
  t.deepEqual(out[4], { id: 6, value: [1, 2, 3] });
  t.regex(r.stderr, /line 3: not JSON/);
  t.regex(r.stderr, /5 results for 5 items \(1 failed\); 1 bad input lines skipped/);
});

test('stream --batch N: consecutive items for one module and function go as one batch; still one NDJSON result per item, with its id', async (t) => {
  // a server that takes at most 2 rows per batch shows how the CLI grouped the items
  const { files, env } = await setup(t, { stream: { maxBatchRows: 2 } });
  for (const name of ['faults', 'echo']) t.is((await runCli(['push', files[name]!, '--name', name, '--version', '1.0.0'], { env })).code, 0);
  const lines = [
    '{"id":1,"args":{"n":1}}',
    '{"id":2,"args":{"n":2}}',
    '{"id":3,"args":{"n":3}}', // a new batch: the first one is full
    '{"id":4,"module":"faults","fn":"err"}', // another module: a new batch
    'not json',
    '{"id":7,"module":"faults","fn":"trap"}',
    '{"id":9,"module":"faults","fn":"trap"}', // ids that do not follow on: sent as ids
    '{"id":10,"module":"nope"}', // the whole batch fails: its row says so
  ];
  const r = await runCli(['stream', 'echo', '--ordered', '--batch', '2'], { env, input: lines.join('\n') + '\n' });
  t.is(r.code, 1, 'a skipped line makes the exit non-zero');
  const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(out.map((o) => o.id), [1, 2, 3, 4, 7, 9, 10]);
  t.deepEqual(out.slice(0, 3), [{ id: 1, value: { n: 1 } }, { id: 2, value: { n: 2 } }, { id: 3, value: { n: 3 } }]);
  t.is(out[3]!.guest_error, 'boom: the guest said no');
  t.like(out[4], { failure: 'TRAP', code: 'TRAP' });
  t.like(out[5], { failure: 'TRAP', code: 'TRAP' });
  t.like(out[6], { failure: 'NOT_FOUND', code: 'NOT_FOUND', message: 'no module named nope' });
  t.regex(r.stderr, /7 results for 7 items \(3 failed\); 1 bad input lines skipped/);

  // three rows in one batch are over the server's cap of two: each row's line says so
  const over = await runCli(['stream', 'echo', '--batch', '3'], { env, input: '{"args":1}\n{"args":2}\n{"args":3}\n' });
  const failures = over.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(failures.map((f) => [f.id, f.failure, f.code]), [1, 2, 3].map((id) => [id, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT']));
  t.regex(String(failures[0]!.message), /3 rows is over the server's cap of 2 \(stream.maxBatchRows\)/);
  t.is(over.code, 0, 'every item was answered (failures are answers)');
});

test('stream --serve-sql: the CLI answers the guests\' sql from a JSON file of rules, one item or batch row at a time or many, within the window', async (t) => {
  const { host, env } = await setup(t);
  const dir = tempDir(t);
  const sqlWasm = join(dir, 'sql.wasm');
  writeFileSync(sqlWasm, await fixture('sql'));
  t.is((await runCli(['push', sqlWasm, '--name', 'sql', '--version', '1.0.0'], { env })).code, 0);
  const answers = join(dir, 'answers.json');
  writeFileSync(answers, JSON.stringify([
    { query: 'ask', vars: { id: 1 }, value: { name: 'one' } },
    { query: 'ask', vars: { id: 2 }, error: 'no row 2' },
    { query: 'ask', vars: { n: 'x' }, value: 'matched' },
  ]));
  const lines = ['{"id":1,"args":{"id":1,"more":true}}', '{"id":2,"args":{"id":2}}', '{"id":3,"args":{"id":3}}'];
  const r = await runCli(['stream', 'sql', '--ordered', '--serve-sql', answers], { env, input: lines.join('\n') + '\n' });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown), [
    { id: 1, value: { name: 'one' } },
    { id: 2, guest_error: 'no row 2' },
    { id: 3, guest_error: `no answer in ${answers} for "ask" with vars {"id":3}` },
  ]);

  // 300 items through a window of 4, as items and as batches of 16: every one answered, none waited for hostCallTimeoutMs
  const many = Array.from({ length: 300 }, (_, i) => `{"id":${i},"args":{"n":"x","i":${i}}}`).join('\n') + '\n';
  for (const extra of [['--window', '4'], ['--batch', '16', '--window', '32']]) {
    const m = await runCli(['stream', 'sql', '--serve-sql', answers, ...extra], { env, input: many, timeoutMs: 60_000 });
    t.is(m.code, 0, m.stderr);
    const out = m.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: number; value: unknown });
    t.is(out.length, 300, extra.join(' '));
    t.true(out.every((o) => o.value === 'matched'), extra.join(' '));
    t.deepEqual(new Set(out.map((o) => o.id)).size, 300);
  }
  const metrics = await (await fetch(`http://${host.metricsServer!.address}/metrics`)).text();
  // item 1 and the 600 rows; items 2 and 3 were answered with errors
  t.regex(metrics, /^plughost_host_calls_total\{outcome="answered"\} 601$/m);
  t.regex(metrics, /^plughost_host_calls_total\{outcome="error"\} 2$/m);
  t.notRegex(metrics, /outcome="timeout"/, 'no host call waited out hostCallTimeoutMs behind items the server was not reading');
  t.is(host.openStreams, 0);

  writeFileSync(answers, '[{"query":"ask"}]');
  const bad = await runCli(['stream', 'sql', '--serve-sql', answers], { env, input: '{"id":1}\n' });
  t.is(bad.code, 1);
  t.is(bad.stderr, `plughost: INVALID_ARGUMENT: --serve-sql ${answers}: 0: give "value" or "error", one of them (expected an array of {"query", "vars"?, "value" or "error"})\n`);
});

test('tokens add / ls / rm edit the token file, and the running server honours them within a second', async (t) => {
  const { host, files, env } = await setup(t);
  t.is((await runCli(['push', files.echo!, '--name', 'echo', '--version', '1.0.0'], { env })).code, 0);
  const dataDir = host.config.dataDir;
  const added = await runCli(['tokens', 'add', '--data', dataDir, '--subject', 'engine', '--tenant', 't1', '--modules', 'ec*', '--kv', 'read'], { env });
  t.is(added.code, 0, added.stderr);
  const token = added.stdout.trim();
  t.regex(token, /^ph_/);
  const id = /token ([0-9a-f]+) added/.exec(added.stderr)![1]!;
  const ls = await runCli(['tokens', 'ls', '--data', dataDir]);
  t.regex(ls.stdout, new RegExp(`${id}\\s+engine\\s+tenant=t1\\s+kv=read\\s+modules=ec\\*`));
  t.false(ls.stdout.includes(token), 'ls never shows a token');

  const engine = { ...env, PLUGHOST_TOKEN: token };
  const ok = await runCli(['invoke', 'echo', '--args', '1'], { env: engine });
  t.is(ok.code, 0, `the server accepts a token added while it runs: ${ok.stderr}`);
  const denied = await runCli(['push', files.echo!, '--name', 'other', '--version', '1.0.0'], { env: engine });
  t.regex(denied.stderr, /PermissionDenied PERMISSION_DENIED/);

  t.is((await runCli(['tokens', 'rm', id, '--data', dataDir])).code, 0);
  await new Promise((r) => setTimeout(r, 1100));
  const gone = await runCli(['invoke', 'echo', '--args', '1'], { env: engine });
  t.regex(gone.stderr, /UNAUTHENTICATED/, 'a removed token stops working');
  const unknown = await runCli(['tokens', 'rm', 'deadbeef', '--data', dataDir]);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no token with id deadbeef/);
});
