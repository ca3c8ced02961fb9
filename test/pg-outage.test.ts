// The shared PostgreSQL stopped under load and started again: calls that need it fail
// with UNAVAILABLE (retryable), none hangs, the service stays up, nothing acknowledged is
// lost, and it serves again once the database is back.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { fixture } from './fixtures/build.js';
import { healthCheck } from './helpers/grpc-clients.js';
import { usePgCluster } from './helpers/postgres.js';
import { clients, push, startPlughost } from './helpers/service.js';
import { waitFor } from './helpers/wait.js';

const pgc = usePgCluster(test);
const enc = (s: string) => new TextEncoder().encode(s);

test.serial('PostgreSQL stopped mid-load and started again: UNAVAILABLE while it is down, nothing acknowledged lost, served again after', async (t) => {
  t.timeout(180_000);
  const cluster = await pgc.cluster();
  const url = await pgc.database('outage');
  const host = await startPlughost(t, { store: url, postgres: { poolSize: 8, statementTimeoutMs: 5000, connectTimeoutMs: 1000, pollMs: 200 } });
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'kv', '1.0.0', await fixture('kv'));
  const acked: number[] = [];
  const codes = new Map<string, number>();
  let phase: 'up' | 'down' | 'back' = 'up';
  let downFailures = 0;
  let okBack = 0;
  const increment = async () => {
    try {
      const r = await c.plugins.invoke({ module: 'kv' }, { timeoutMs: 30_000 });
      acked.push(Buffer.from(r.result.value as Uint8Array).readUInt32LE(0));
      if (phase === 'back') okBack++;
    } catch (e) {
      const code = Code[ConnectError.from(e).code];
      codes.set(code, (codes.get(code) ?? 0) + 1);
      if (phase === 'down') downFailures++;
    }
  };
  const until = Date.now() + 120_000;
  const loops = Promise.all(
    Array.from({ length: 6 }, async () => {
      while (Date.now() < until && !(phase === 'back' && okBack >= 100)) await increment();
    }),
  );
  t.true(await waitFor(() => acked.length >= 100, 30_000), 'served while the database is up');
  await cluster.stop('fast');
  phase = 'down';
  t.true(await waitFor(() => downFailures >= 30, 30_000), 'calls fail while it is down');
  t.is(await healthCheck(host.address), 'SERVING', 'the service itself is up');
  const ackedWhileDown = acked.length;
  await cluster.restart();
  phase = 'back';
  await loops;
  t.log(`acknowledged ${acked.length} (${ackedWhileDown} before the restart), failures by code: ${JSON.stringify(Object.fromEntries(codes))}`);
  t.true(okBack >= 100, 'served again once the database is back');
  t.deepEqual([...codes.keys()], ['Unavailable'], 'every failure is UNAVAILABLE');
  const stored = (await c.plugins.invoke({ module: 'kv', function: 'get', args: enc('n') })).result.value as Uint8Array;
  const final = Buffer.from(stored.subarray(1)).readUInt32LE(0);
  t.is(new Set(acked).size, acked.length, 'no two acknowledged increments saw the same value');
  t.true(acked.every((v) => v <= final) && final >= acked.length, `every acknowledged increment is kept (final ${final}, acked ${acked.length})`);
  t.true(final <= acked.length + downFailures + 6, 'and at most the calls whose COMMIT was in doubt were kept without an answer');
});
