// `run` through the service: a real server and client. The nested call resolves names and
// aliases as Invoke does, under the identity of the caller whose call made it.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { clients, push, pushFixture, startPlughost } from './helpers/service.js';
import { fixture, withCustomSection } from './fixtures/build.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function answer(p: Promise<{ result: { case?: string; value?: unknown } }>): Promise<string> {
  const r = (await p).result;
  return r.case === 'value' ? dec(r.value as Uint8Array) : `err: ${String(r.value)}`;
}

test("run resolves names and aliases under the caller's token: a module outside its patterns is refused, its tenant's scope is used", async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'run', '1.0.0', 'front');
  await pushFixture(admin, 'run', '1.0.0', 'back');
  await pushFixture(admin, 'run', '1.0.0', 'secret');
  const engine = clients(t, host.address, (await host.tokens.add({ subject: 'engine', tenant: 't1', admin: false, modules: ['front', 'back'], kv: 'write' })).token);
  t.is(await answer(engine.plugins.invoke({ module: 'front', function: 'relay', args: enc('back|echo|hi') })), 'hi');
  t.is(await answer(engine.plugins.invoke({ module: 'front', function: 'relay', args: enc('back@1.0.0|echo|pinned') })), 'pinned');
  t.is(
    await answer(engine.plugins.invoke({ module: 'front', function: 'relay', args: enc('secret|echo|x') })),
    'err: run secret: engine may not invoke secret (its token allows front, back)',
  );
  t.regex(await answer(engine.plugins.invoke({ module: 'front', function: 'relay', args: enc('nowhere|echo|x') })), /^err: run nowhere: /);
  // back writes in (t1, back); the admin's tenant does not see it
  t.is(await answer(engine.plugins.invoke({ module: 'front', function: 'relay', args: enc('back|write|k') })), '');
  t.is(await answer(engine.plugins.invoke({ module: 'back', function: 'read', args: enc('k') })), 'w');
  t.is(await answer(admin.plugins.invoke({ module: 'back', function: 'read', args: enc('k') })), '(none)');
});

test('a read-only caller cannot write through run either', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'run', '1.0.0', 'front');
  await pushFixture(admin, 'run', '1.0.0', 'back');
  const reader = clients(t, host.address, (await host.tokens.add({ subject: 'ro', tenant: 't1', admin: false, modules: ['*'], kv: 'read' })).token);
  t.regex(await answer(reader.plugins.invoke({ module: 'front', function: 'relay', args: enc('back|write|k') })), /^err: kvSet: KV write denied/);
});

test('nested calls count in the callee\'s metrics; a call that fails after its nested call leaves nothing written', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'run', '1.0.0', 'front');
  await pushFixture(admin, 'run', '1.0.0', 'back');
  t.is(await answer(admin.plugins.invoke({ module: 'front', function: 'relay-fail', args: enc('back|write|k') })), 'err: outer failed after run');
  t.is(await answer(admin.plugins.invoke({ module: 'back', function: 'read', args: enc('k') })), '(none)');
  const text = await (await fetch(`http://${host.metricsServer!.address}/metrics`)).text();
  t.regex(text, /plughost_calls_total\{module="back",function="write",outcome="ok"\} 1\n/);
  t.regex(text, /plughost_calls_total\{module="front",function="relay-fail",outcome="guest_error"\} 1\n/);
});

test('a deadline set by the client bounds the nested call too', async (t) => {
  const host = await startPlughost(t);
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'run', '1.0.0', 'front');
  await pushFixture(admin, 'run', '1.0.0', 'back');
  const e = await admin.plugins.invoke({ module: 'front', function: 'relay', args: enc('back|spin|') }, { timeoutMs: 1500 }).catch((x: unknown) => x);
  t.true(e instanceof ConnectError);
  t.true([Code.DeadlineExceeded].includes((e as ConnectError).code));
});

test('through the service: a chain past maxRunDepth and a module that runs itself with a pool of one both answer err at once', async (t) => {
  const host = await startPlughost(t, { maxRunDepth: 2, acquireTimeoutMs: 60_000 });
  const admin = clients(t, host.address, host.createdAdminToken);
  await pushFixture(admin, 'run', '1.0.0', 'loop');
  t.is(await answer(admin.plugins.invoke({ module: 'loop', function: 'relay', args: enc('loop|relay|loop|echo|two deep') })), 'two deep');
  t.regex(await answer(admin.plugins.invoke({ module: 'loop', function: 'relay', args: enc('loop|relay|loop|relay|loop|echo|x') })), /^err: run loop: the chain of calls would be 3 deep, past maxRunDepth \(2\)$/);
  await push(admin, 'solo', '1.0.0', withCustomSection(await fixture('run'), 'solo'), { limits: { maxPoolSize: 1 } });
  const started = Date.now();
  t.regex(await answer(admin.plugins.invoke({ module: 'solo', function: 'relay', args: enc('solo|echo|me') })), /^err: run solo: no controller of .* is free and this call's own chain holds 1 of its 1/);
  t.true(Date.now() - started < 30_000, 'not acquireTimeoutMs');
});
