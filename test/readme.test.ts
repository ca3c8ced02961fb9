// The README's grpcurl session and its sql worked example, run as written (shell and all)
// against `plughost serve` on its first start, so the front door stays true. grpcurl itself
// is a Go binary that this machine cannot install; test/helpers/grpcurl.ts stands in for it
// on PATH, doing what grpcurl does: server reflection, proto3 JSON in and out.
import test, { type ExecutionContext } from 'ava';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runProcess } from './helpers/cli.js';
import { tempDir } from './helpers/kv.js';
import { startServeProcess } from './helpers/serve-process.js';
import { waitFor } from './helpers/wait.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const STAND_IN = fileURLToPath(new URL('./helpers/grpcurl.ts', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

/** The first ```sh block after `heading`. */
function shellBlock(markdown: string, heading: string): string {
  const from = markdown.indexOf(heading);
  if (from < 0) throw new Error(`the README has no "${heading}"`);
  const m = /```sh\n([\s\S]*?)```/.exec(markdown.slice(from));
  if (!m) throw new Error(`no sh block after "${heading}"`);
  return m[1]!;
}

/** `plughost serve` on its first start (the examples pushed) in a temp dir, stopped when the test ends. */
async function firstStart(t: ExecutionContext): Promise<{ dir: string; server: Awaited<ReturnType<typeof startServeProcess>> }> {
  const dir = tempDir(t);
  const server = await startServeProcess(join(dir, 'data'), {}, { examples: true });
  t.teardown(async () => {
    server.child.kill('SIGTERM');
    await server.exited;
  });
  await waitFor(() => /example plugin pushed: text@/.test(server.stderr()), 30_000, 50);
  return { dir, server };
}

test('the README\'s grpcurl session runs as written against a first start of plughost serve', async (t) => {
  t.timeout(120_000);
  const { dir, server } = await firstStart(t);
  t.truthy(server.token, 'the first start printed an admin token');

  writeFileSync(join(dir, 'grpcurl'), `#!/bin/sh\nexec "${process.execPath}" --import tsx "${STAND_IN}" "$@"\n`);
  chmodSync(join(dir, 'grpcurl'), 0o755);
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = shellBlock(readme, '## Talking to it with grpcurl');
  t.regex(block, /^TOKEN=ph_\S+/m, 'the session starts from the token the first start prints');
  const script = block.replace(/^TOKEN=ph_\S+/m, `TOKEN=${server.token}`).replaceAll('127.0.0.1:50051', server.address);
  const r = await runProcess('bash', ['-euo', 'pipefail', '-c', script], { cwd: ROOT, env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, timeoutMs: 90_000 });
  t.is(r.code, 0, r.stderr);

  // what the README says each command shows
  for (const s of ['grpc.health.v1.Health', 'plughost.v1.ModuleService', 'plughost.v1.PluginService']) t.regex(r.stdout, new RegExp(`^${s.replaceAll('.', '\\.')}$`, 'm'));
  t.regex(r.stdout, /rpc Stream \( stream \.plughost\.v1\.StreamRequest \) returns \( stream \.plughost\.v1\.StreamResponse \)/);
  t.regex(r.stdout, /"status": "SERVING"/);
  t.regex(r.stdout, /"name": "stats"/);
  t.regex(r.stdout, /"name": "similarity"/, 'DescribeModule lists the text example\'s functions');
  const claimed = /# -> \{ "value": "([^"]+)"/.exec(block)?.[1];
  t.truthy(claimed, 'the README shows the similarity result');
  t.regex(r.stdout, new RegExp(`"value": "${claimed}"`), `Invoke answers what the README shows (${claimed})`);
  const streamIds = [...r.stdout.matchAll(/"id": "(\d+)",\s*"outcome": \{\s*"value": "[^"]+"/g)].map((m) => m[1]);
  t.deepEqual(streamIds, ['1', '2'], 'the Stream answers both items, in order');
  const batch = /"id": "10",\s*"moduleHash": "sha256:[0-9a-f]{64}",\s*"batch": \{\s*"firstId": "10",\s*"outcomes": \[([^\]]*)\]/.exec(r.stdout);
  t.truthy(batch, 'the batch is answered by one message with its first id and the module hash');
  const rowValues = [...(batch?.[1] ?? '').matchAll(/"value": "([^"]+)"/g)].map((m) => m[1]);
  t.is(rowValues.length, 2, 'one outcome per row');
  // fnv1a of "one" and "two" as the items above answered them
  const itemValues = [...r.stdout.matchAll(/"id": "[12]",\s*"outcome": \{\s*"value": "([^"]+)"/g)].map((m) => m[1]);
  t.deepEqual(rowValues, itemValues, 'each row has the outcome its item had, in row order');
  t.regex(r.stdout, /"name": "echo",\s*"version": "1\.0\.0"/, 'PushModule answers with the pushed module');
  t.regex(r.stdout, /"created": true/);
});

test('the README\'s sql worked example runs as written: plughost stream --serve-sql answers the text example\'s enrich', async (t) => {
  t.timeout(120_000);
  const { dir, server } = await firstStart(t);
  // the block runs in its own directory (it writes people.json there): tsx by its full address
  writeFileSync(join(dir, 'plughost'), `#!/bin/sh\nexec "${process.execPath}" --import "${import.meta.resolve('tsx')}" "${CLI}" "$@"\n`);
  chmodSync(join(dir, 'plughost'), 0o755);
  const block = shellBlock(readFileSync(join(ROOT, 'README.md'), 'utf8'), '## Engines that answer sql');
  t.regex(block, /^export PLUGHOST_TOKEN=ph_\S+/m);
  const script = block.replace(/^export PLUGHOST_TOKEN=ph_\S+/m, `export PLUGHOST_TOKEN=${server.token}`);
  const r = await runProcess('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, PLUGHOST_ADDRESS: server.address }, timeoutMs: 90_000 });
  t.is(r.code, 0, r.stderr);
  const claimed = [...block.matchAll(/^# -> (.*)$/gm)].map((m) => m[1]);
  t.is(claimed.length, 2, 'the README shows both results');
  t.deepEqual(r.stdout.trim().split('\n'), claimed, 'the output is what the README shows');
});
