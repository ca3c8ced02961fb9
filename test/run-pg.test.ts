// `run` on the shared PostgreSQL store (KV over the host-call bridge): the calls of a tree
// share one PostgreSQL transaction per scope, a nested call that fails goes back to its SQL
// SAVEPOINT, and the tree commits with its top-level call or not at all.
import test, { type ExecutionContext } from 'ava';
import { fixture, withCustomSection } from './fixtures/build.js';
import { testPgOptions, usePgCluster } from './helpers/postgres.js';
import { ctx, manager, none } from './helpers/runtime.js';
import { PgDatabase } from '../src/pg/db.js';
import { PgKvStore } from '../src/kv/pg-store.js';
import type { Runtime } from '../src/runtime/runtime.js';

const pgc = usePgCluster(test);
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function setup(t: ExecutionContext) {
  const db = await PgDatabase.open(testPgOptions(await pgc.database('run')));
  const store = new PgKvStore(db, { lockTimeoutMs: 60_000 });
  t.teardown(async () => {
    await store.close();
    await db.close();
  });
  const m = await manager(t, { store });
  const bytes = await fixture('run');
  const a = await m.load(bytes, { name: 'a' });
  const b = await m.load(withCustomSection(bytes, 'b'), { name: 'b' });
  return { m, a, b };
}

async function call(rt: Runtime, fn: string | undefined, args: string, overrides = {}): Promise<string> {
  const r = await rt.invoke(ctx(overrides), fn, enc(args));
  return r.ok ? dec(r.value) : `err: ${r.guestError}`;
}

test('postgres: nested writes commit with the top-level call and go with it; a failed nested call goes back to its savepoint', async (t) => {
  const { m, a, b } = await setup(t);
  t.false(m.kvInWorkers);
  t.is(await call(a, 'relay-fail', `${b.hash}|write|k`), 'err: outer failed after run');
  t.is(await call(b, 'read', 'k'), '(none)');
  t.is(await call(a, 'relay', `${b.hash}|write|k`), '');
  t.is(await call(b, 'read', 'k'), 'w');
  // a's scope written two levels down: gone with b, which failed after it; kept when b succeeds
  t.is(await call(a, 'relay-read', `${b.hash}|relay-fail|${a.hash}|write|outer`), '(none)');
  t.is(await call(a, 'read', 'outer'), '(none)');
  t.is(await call(a, 'relay-read', `${b.hash}|relay|${a.hash}|write|outer`), 'w');
  t.is(await call(a, 'read', 'outer'), 'w');
  // a later call of the tree reads what an earlier one wrote, before the tree commits
  t.is(await call(a, 'relay2', `${b.hash}|write|sib;${b.hash}|read|sib`), 'w');
  t.is(await call(a, 'relay2', `${b.hash}|write-fail|sib2;${b.hash}|read|sib2`), '(none)');
});

test('postgres: nested increments from concurrent calls beside direct ones are all counted', async (t) => {
  const { m, a } = await setup(t);
  const counter = await m.load(await fixture('kv'), { name: 'counter' });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a.invoke(ctx(), 'relay', enc(`${counter.hash}||`)) : counter.invoke(ctx(), undefined, none))));
  t.true(results.every((r) => r.ok));
  const r = await counter.invoke(ctx(), 'get', enc('n'));
  t.true(r.ok);
  if (r.ok) t.is(Buffer.from(r.value.subarray(1)).readUInt32LE(0), 20);
});
