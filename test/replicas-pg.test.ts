// Three `plughost serve` processes on 127.0.0.1 sharing one PostgreSQL, each with a data
// directory of its own, and a grpc-js client balancing round-robin over all three: a push
// on one is served by the others, increments spread over all are counted exactly, a token
// revoked on one is refused by all, a replica killed mid-load loses no acknowledged write
// while the others serve on, and a module deleted on one stops being served by the others.
import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import { Code, ConnectError } from '@connectrpc/connect';
import { fixture } from './fixtures/build.js';
import { runCli } from './helpers/cli.js';
import { startServeProcess, type ServeProcess } from './helpers/serve-process.js';
import { clients, push, type Clients } from './helpers/service.js';
import { RoundRobinClient, type InvokeOutcome } from './helpers/round-robin.js';
import { usePgCluster } from './helpers/postgres.js';
import { waitFor } from './helpers/wait.js';

const pgc = usePgCluster(test);
const POLL_MS = 200;
let url = '';
const replicas: ServeProcess[] = [];
let admin = '';

const enc = (s: string) => new TextEncoder().encode(s);
const u32 = (v: Uint8Array | undefined) => (v && v[0] === 1 ? Buffer.from(v.subarray(1)).readUInt32LE(0) : 0);

test.before(async () => {
  url = await pgc.database('replicas');
  const env = { PLUGHOST_STORE: url, PLUGHOST_POSTGRES__POLL_MS: String(POLL_MS), PLUGHOST_POSTGRES__POOL_SIZE: '8', PLUGHOST_LIMITS__MAX_POOL_SIZE: '4' };
  // the first start makes the one admin token; the others find tokens there and make none
  for (let i = 0; i < 3; i++) replicas.push(await startServeProcess(`${tempDirOf(i)}`, env));
  admin = replicas[0]!.token!;
  if (!admin || replicas.slice(1).some((r) => r.token)) throw new Error('exactly the first replica should have made an admin token');
});

test.after.always(async () => {
  for (const r of replicas) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await Promise.all(replicas.map((r) => r.exited));
});

// data directories of their own (nothing local is shared), removed with the process' temp files
const dirs: string[] = [];
function tempDirOf(i: number): string {
  dirs[i] ??= `${process.env.TMPDIR ?? '/tmp'}/plughost-replica-${process.pid}-${i}`;
  return dirs[i]!;
}
test.after.always(async () => {
  const { rmSync } = await import('node:fs');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const each = (t: ExecutionContext): Clients[] => replicas.map((r) => clients(t, r.address, admin));

test.serial('a module pushed on one replica is invoked on every replica at once', async (t) => {
  const c = each(t);
  await push(c[0]!, 'kv', '1.0.0', await fixture('kv'));
  for (const [i, r] of c.entries()) {
    const res = await r.plugins.invoke({ module: 'kv', function: 'get', args: enc('absent') });
    t.deepEqual([...(res.result.value as Uint8Array)], [0], `replica ${i} serves kv@1.0.0`);
  }
  t.is((await c[2]!.modules.listModules({})).modules.length, 1, 'and lists it');
});

test.serial('300 increments balanced round-robin over the three replicas, 12 at once, are counted exactly', async (t) => {
  const rr = new RoundRobinClient(replicas.map((r) => r.address), admin);
  t.teardown(() => rr.close());
  const outcomes: InvokeOutcome[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 12 }, async () => {
      while (next < 300) {
        next++;
        outcomes.push(await rr.invoke('kv', undefined, new Uint8Array()));
      }
    }),
  );
  t.deepEqual(outcomes.filter((o) => o.code !== status.OK), [], 'every increment succeeded');
  const seen = new Set(outcomes.map((o) => Buffer.from(o.value!).readUInt32LE(0)));
  t.is(seen.size, 300, 'no two increments saw the same value');
  for (const [i, c] of each(t).entries()) t.is(u32((await c.plugins.invoke({ module: 'kv', function: 'get', args: enc('n') })).result.value as Uint8Array), 300, `replica ${i} reads 300`);
});

test.serial('a token added with `plughost tokens --store` works on every replica, and once removed is refused by every replica, within the poll bound', async (t) => {
  const env = { PLUGHOST_STORE: url };
  const added = await runCli(['tokens', 'add', '--subject', 'engine', '--tenant', 'e', '--modules', 'kv', '--kv', 'read'], { env });
  t.is(added.code, 0, added.stderr);
  const token = added.stdout.trim();
  const id = /token (\S+) added/.exec(added.stderr)![1]!;
  const rr = new RoundRobinClient(replicas.map((r) => r.address), admin);
  t.teardown(() => rr.close());
  const direct = replicas.map((r) => new RoundRobinClient([r.address], token));
  t.teardown(() => direct.forEach((d) => d.close()));
  const codes = async () => Promise.all(direct.map(async (d) => (await d.invoke('kv', 'get', enc('n'))).code));
  let t0 = Date.now();
  t.true(await waitFor(async () => (await codes()).every((c) => c === status.OK), 20_000, 50), 'accepted everywhere');
  const addMs = Date.now() - t0;
  const listed = await runCli(['tokens', 'ls'], { env });
  t.regex(listed.stdout, new RegExp(`${id}\\s+engine`));
  t0 = Date.now();
  const removed = await runCli(['tokens', 'rm', id], { env });
  t.is(removed.code, 0, removed.stderr);
  t.true(await waitFor(async () => (await codes()).every((c) => c === status.UNAUTHENTICATED), 20_000, 50), 'refused everywhere');
  const rmMs = Date.now() - t0;
  // measured, not asserted tight: the bound is one poll interval plus a reload (and the CLI's own start for the removal)
  t.log(`token added: accepted on all 3 replicas after ${addMs} ms; removed: refused on all after ${rmMs} ms (poll ${POLL_MS} ms)`);
});

test.serial('a replica killed with SIGKILL mid-load loses no acknowledged write, and the other two serve on', async (t) => {
  t.timeout(120_000);
  const c = each(t);
  await push(c[1]!, 'kv', '2.0.0', await fixture('kv'));
  const rr = new RoundRobinClient(replicas.map((r) => r.address), admin);
  t.teardown(() => rr.close());
  const acked: number[] = [];
  const failed = new Map<number, number>();
  let okAfterKill = 0;
  let killed = false;
  const until = Date.now() + 60_000;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (acked.length < 400 && Date.now() < until) {
        const o = await rr.invoke('kv@2.0.0', undefined, new Uint8Array(), 15_000);
        if (o.code === status.OK && o.value) {
          acked.push(Buffer.from(o.value).readUInt32LE(0));
          if (killed) okAfterKill++;
        } else failed.set(o.code, (failed.get(o.code) ?? 0) + 1);
        if (!killed && acked.length >= 100) {
          killed = true;
          replicas[2]!.child.kill('SIGKILL');
        }
      }
    }),
  );
  t.true(killed);
  await replicas[2]!.exited;
  t.log(`${acked.length} increments acknowledged, ${okAfterKill} after the kill; failed: ${JSON.stringify(Object.fromEntries([...failed].map(([k, n]) => [status[k], n])))}`);
  t.true(okAfterKill >= 200, `the other replicas served on (${okAfterKill} calls after the kill)`);
  // calls cut by the kill fail as UNAVAILABLE (or were never sent); none gives a wrong answer
  for (const code of failed.keys()) t.true([status.UNAVAILABLE, status.CANCELLED].includes(code), `failure code ${status[code]}`);
  const final = u32((await c[0]!.plugins.invoke({ module: 'kv', function: 'get', args: enc('n') })).result.value as Uint8Array);
  t.is(new Set(acked).size, acked.length, 'no two acknowledged increments saw the same value');
  t.true(acked.every((v) => v <= final), 'every acknowledged increment is in the final count');
  t.true(final >= 300 + acked.length && final <= 300 + acked.length + [...failed.values()].reduce((a, b) => a + b, 0), `final ${final}, acked ${acked.length}`);
});

test.serial('a module deleted on one replica stops being served by the others within the poll bound', async (t) => {
  const live = [replicas[0]!, replicas[1]!].map((r) => clients(t, r.address, admin));
  await push(live[0]!, 'gone', '1.0.0', await fixture('echo'));
  t.is((await live[1]!.plugins.invoke({ module: 'gone', args: enc('hi') })).result.value?.length, 2, 'compiled and served on the other replica');
  const t0 = Date.now();
  await live[0]!.modules.deleteModule({ module: 'gone@1.0.0' });
  const refused = await waitFor(async () => {
    try {
      await live[1]!.plugins.invoke({ module: 'gone', args: enc('hi') });
      return false;
    } catch (e) {
      return ConnectError.from(e).code === Code.NotFound;
    }
  }, 20_000, 50);
  t.true(refused, 'NOT_FOUND on the other replica');
  t.log(`deleted on one replica: NOT_FOUND on the other after ${Date.now() - t0} ms (poll ${POLL_MS} ms)`);
});
