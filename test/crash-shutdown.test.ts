// The whole service as a process: SIGKILL during a write-heavy load loses no acknowledged
// write and tears no transaction; SIGTERM during load drains the calls in flight.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { readU32 } from './helpers/runtime.js';
import { kvSetArgs as setArgs, tempDir } from './helpers/kv.js';
import { clients, pushFixture } from './helpers/service.js';
import { startServeProcess } from './helpers/serve-process.js';

const enc = (s: string) => new TextEncoder().encode(s);

test.serial('SIGKILL during a write-heavy load: every acknowledged write survives the restart, no transaction is torn, every module is served', async (t) => {
  t.timeout(120_000);
  const dataDir = tempDir(t);
  const first = await startServeProcess(dataDir);
  t.teardown(() => first.child.kill('SIGKILL'));
  const token = first.token!;
  const c1 = clients(t, first.address, token);
  await pushFixture(c1, 'kv');
  await pushFixture(c1, 'echo', '2.0.0');

  const acked: string[] = [];
  let twiceAcked = 0;
  let stop = false;
  // 8 writers of unique keys and 4 of `twice` (two increments of "n" in one transaction)
  const writers = [
    ...Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const key = `w${w}-${i}`;
        try {
          await c1.plugins.invoke({ module: 'kv', function: 'set', args: setArgs(key, `value of ${key}`) });
          acked.push(key);
        } catch {
          return; // the server is gone
        }
      }
    }),
    ...Array.from({ length: 4 }, async () => {
      while (!stop) {
        try {
          await c1.plugins.invoke({ module: 'kv', function: 'twice' });
          twiceAcked++;
        } catch {
          return;
        }
      }
    }),
  ];
  while (acked.length < 400) await new Promise((r) => setTimeout(r, 20));
  first.child.kill('SIGKILL');
  stop = true;
  await Promise.all(writers);
  t.is((await first.exited).signal, 'SIGKILL');

  const second = await startServeProcess(dataDir);
  t.teardown(() => second.child.kill('SIGKILL'));
  t.is(second.token, undefined, 'the tokens survived too');
  const c2 = clients(t, second.address, token);
  t.deepEqual((await c2.modules.listModules({})).modules.map((m) => `${m.name}@${m.version}`), ['echo@2.0.0', 'kv@1.0.0']);
  t.is(new TextDecoder().decode((await c2.plugins.invoke({ module: 'echo', args: enc('back') })).result.value as Uint8Array), 'back');
  const lost: string[] = [];
  for (const key of acked) {
    const got = (await c2.plugins.invoke({ module: 'kv', function: 'get', args: enc(key) })).result.value as Uint8Array;
    if (got[0] !== 1 || new TextDecoder().decode(got.subarray(1)) !== `value of ${key}`) lost.push(key);
  }
  t.deepEqual(lost, [], `${acked.length} acknowledged writes`);
  const n = readU32(((await c2.plugins.invoke({ module: 'kv', function: 'get', args: enc('n') })).result.value as Uint8Array).subarray(1));
  t.true(n >= 2 * twiceAcked, `n = ${n} after ${twiceAcked} acknowledged double increments`);
  t.is(n % 2, 0, 'no transaction of two increments was torn');
  t.log(`${acked.length} acknowledged writes and ${twiceAcked} double increments, killed, all there after the restart`);
  second.child.kill('SIGTERM');
  t.is((await second.exited).code, 0);
});

/**
 * How a call that failed during shutdown was refused before the server started it, or
 * undefined if it was not (it was cut): plughost's own refusal of a new call, HTTP/2
 * refusing a stream sent as the GOAWAY crossed it (never processed; connect-node reports it
 * as INTERNAL), or no connection to be had once the listener closed.
 */
function refusedBeforeStart(err: ConnectError): string | undefined {
  if (err.metadata.get('plughost-error-code') === 'UNAVAILABLE' && /^the server is shutting down|^the runtime is closing$/.test(err.rawMessage)) return 'by plughost';
  if (/REFUSED_STREAM/.test(err.rawMessage)) return 'REFUSED_STREAM';
  if (err.code === Code.Unavailable && /^connect ECONNREFUSED /.test(err.rawMessage)) return 'no connection';
  return undefined;
}

test.serial('SIGTERM during load: calls in flight finish, later ones are refused, none is cut, and the process exits 0 within the grace bound', async (t) => {
  t.timeout(120_000);
  const served = await startServeProcess(tempDir(t), { PLUGHOST_SHUTDOWN_GRACE_MS: '5000' });
  t.teardown(() => served.child.kill('SIGKILL'));
  const c = clients(t, served.address, served.token!);
  await pushFixture(c, 'echo');
  await pushFixture(c, 'hash');
  // 256 KiB: 8 uploads in flight stay under the client session's 10 MB default (maxSessionMemory)
  const big = new Uint8Array(256 << 10).map((_, i) => i);
  const outcomes = new Map<string, number>();
  const note = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
  let sigtermAt = 0;
  let okAfterSigterm = 0;
  /** Calls that had started and got no answer: within the grace period there must be none. */
  const cut: string[] = [];
  const callers = Array.from({ length: 16 }, async (_, i) => {
    for (;;) {
      const started = Date.now();
      try {
        await c.plugins.invoke(i % 2 ? { module: 'hash', args: big } : { module: 'echo', args: enc('x') }, { timeoutMs: 15_000 });
        note('ok');
        if (sigtermAt && started >= sigtermAt) okAfterSigterm++;
      } catch (e) {
        const err = ConnectError.from(e);
        const kind = refusedBeforeStart(err);
        note(kind ? `refused (${kind})` : 'cut');
        if (!kind) cut.push(`${Code[err.code]} (${err.metadata.get('plughost-error-code') ?? 'no plughost code'}): ${err.rawMessage}`);
        return;
      }
    }
  });
  await new Promise((r) => setTimeout(r, 1500));
  sigtermAt = Date.now();
  served.child.kill('SIGTERM');
  const exit = await served.exited;
  const took = Date.now() - sigtermAt;
  await Promise.all(callers);
  t.is(exit.code, 0, served.stderr());
  t.true(took < 5000 + 3000, `stopped ${took} ms after SIGTERM (grace 5000 ms)`);
  t.true((outcomes.get('ok') ?? 0) > 16, `calls completed: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  t.deepEqual(cut, [], 'no call that had started was cut within the grace period');
  t.regex(served.stderr(), /SIGTERM: draining in-flight calls/);
  t.log(`outcomes ${JSON.stringify(Object.fromEntries(outcomes))}; ${okAfterSigterm} calls sent after SIGTERM still answered before the listener closed; exit after ${took} ms`);
});
