// Hostile modules and guests (issue: reliability and security). Whatever bytes are pushed
// and whatever a guest does to its host, each gets a clear error and the process goes on:
// a crash here would take the test runner down with it.
import test from 'ava';
import { Code, ConnectError } from '@connectrpc/connect';
import { buildFixture, fixture } from './fixtures/build.js';
import { healthCheck } from './helpers/grpc-clients.js';
import { clients, push, startPlughost, type Clients } from './helpers/service.js';

const enc = (s: string) => new TextEncoder().encode(s);

/** The status of a call: OK, or its gRPC code, and the message. */
async function outcome(p: Promise<unknown>): Promise<{ code: Code | 'OK'; message: string; value?: unknown }> {
  try {
    return { code: 'OK', message: '', value: await p };
  } catch (e) {
    const c = ConnectError.from(e);
    return { code: c.code, message: c.rawMessage };
  }
}

/** A small seeded PRNG (mulberry32), so a failing mutation can be reproduced. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function stillServing(t: import('ava').ExecutionContext, c: Clients, address: string) {
  t.is(await healthCheck(address), 'SERVING');
  const r = await c.plugins.invoke({ module: 'echo', args: enc('still here') });
  t.is(new TextDecoder().decode(r.result.value as Uint8Array), 'still here');
}

test('a guest that attacks its host: stack overflow is a trap, bad pointers and lengths are refused, a string that is not UTF-8 traps', async (t) => {
  const host = await startPlughost(t, { limits: { maxMemoryBytes: 16 << 20 } });
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'echo', '1.0.0', await fixture('echo'));
  await push(c, 'hostile', '1.0.0', await fixture('hostile'), { limits: { maxExecutionMs: 5000 } });
  const call = (fn: string) => outcome(c.plugins.invoke({ module: 'hostile', function: fn }));

  const recurse = await call('recurse');
  t.is(recurse.code, Code.Aborted, `stack overflow: ${recurse.message}`);
  const oob = await call('oob');
  t.is(oob.code, Code.Aborted, `result out of bounds: ${oob.message}`);
  const huge = await call('hugelen');
  t.true(huge.code === Code.Aborted || huge.code === Code.ResourceExhausted, `a 2 GiB result: ${Code[huge.code as Code]} ${huge.message}`);
  // a WIT string must be UTF-8 (the canonical ABI traps on anything else): an err string, and
  // a KV key, that is not is refused, never decoded into another string than the guest's
  for (const fn of ['badutf8', 'badkey8']) {
    const bad = await call(fn);
    t.is(bad.code, Code.Aborted, `${fn}: ${bad.message}`);
    t.regex(bad.message, /the guest passed a string that is not valid UTF-8/, fn);
  }
  const key = await call('badkey');
  t.is(key.code, Code.Aborted, `a key out of bounds: ${key.message}`);

  const pool = (await c.modules.describeModule({ module: 'hostile' })).pool!;
  t.is(pool.inUse, 0);
  t.true(Number(pool.droppedTrap) + Number(pool.droppedMemory) + Number(pool.droppedOther) >= 6, 'every controller in doubt was dropped');
  t.is(((await c.plugins.invoke({ module: 'hostile', args: enc('ok') })).result.value as Uint8Array).length, 2, 'the module still serves');
  await stillServing(t, c, host.address);
});

test('memory the module asks for beyond the cap, and data beyond its memory, are refused with a clear error', async (t) => {
  const host = await startPlughost(t, { limits: { maxMemoryBytes: 64 << 20 } });
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'echo', '1.0.0', await fixture('echo'));
  // 2,000 pages (125 MiB) of minimum memory against a 64 MiB cap
  const bigMemory = await buildFixture('echo', (w) => w.replace('(memory (export "memory") 2)', '(memory (export "memory") 2000)'));
  const r1 = await outcome(push(c, 'bigmem', '1.0.0', bigMemory));
  t.is(r1.code, Code.InvalidArgument, r1.message);
  t.regex(r1.message, /memory/i);
  // a data segment placed past the end of the memory: instantiation fails, so the first call does
  const farData = await buildFixture('echo', (w) => w.replace('(memory (export "memory") 2)', '(memory (export "memory") 2)\n  (data (i32.const 200000) "past the end")'));
  const pushed = await outcome(push(c, 'fardata', '1.0.0', farData));
  if (pushed.code === 'OK') {
    const first = await outcome(c.plugins.invoke({ module: 'fardata' }));
    t.not(first.code, 'OK');
    t.true([Code.Aborted, Code.FailedPrecondition, Code.InvalidArgument].includes(first.code as Code), `${Code[first.code as Code]}: ${first.message}`);
  } else {
    t.is(pushed.code, Code.InvalidArgument, pushed.message);
  }
  await stillServing(t, c, host.address);
});

test('300 mutated components and random bytes: every push and call gets a clear status, never INTERNAL, and the server keeps serving', async (t) => {
  t.timeout(180_000);
  const host = await startPlughost(t, { limits: { maxMemoryBytes: 16 << 20, maxExecutionMs: 500 }, maxModuleBytes: 1 << 20 });
  const c = clients(t, host.address, host.createdAdminToken);
  await push(c, 'echo', '1.0.0', await fixture('echo'));
  const random = rng(0x5eed);
  const originals = await Promise.all(['echo', 'kv', 'introspect'].map((n) => fixture(n)));
  const cases: { how: string; bytes: Uint8Array }[] = [];
  for (let i = 0; i < 300; i++) {
    const base = originals[i % originals.length]!;
    const b = new Uint8Array(base);
    const kind = i % 4;
    if (kind === 0) cases.push({ how: `truncated to ${Math.floor(random() * b.length)}`, bytes: b.subarray(0, Math.floor(random() * b.length)) });
    else if (kind === 1 || kind === 2) {
      const flips = 1 + Math.floor(random() * 8);
      for (let f = 0; f < flips; f++) b[Math.floor(random() * b.length)]! ^= 1 << Math.floor(random() * 8);
      cases.push({ how: `${flips} bits flipped`, bytes: b });
    } else {
      const len = Math.floor(random() * 4096);
      cases.push({ how: `${len} random bytes${i % 8 === 3 ? ' after a wasm header' : ''}`, bytes: Uint8Array.from({ length: len }, (_, j) => (i % 8 === 3 && j < 8 ? [0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0][j]! : Math.floor(random() * 256))) });
    }
  }
  const tally = new Map<string, number>();
  const count = (k: string) => tally.set(k, (tally.get(k) ?? 0) + 1);
  for (const [i, m] of cases.entries()) {
    const pushed = await outcome(push(c, `m${i}`, '1.0.0', m.bytes));
    if (pushed.code !== 'OK') {
      t.is(pushed.code, Code.InvalidArgument, `case ${i} (${m.how}): push ${Code[pushed.code]}: ${pushed.message}`);
      t.true(pushed.message.length > 0);
      count('refused at push');
      continue;
    }
    const called = await outcome(c.plugins.invoke({ module: `m${i}`, args: enc('x') }, { timeoutMs: 5000 }));
    t.not(called.code, Code.Internal, `case ${i} (${m.how}): ${called.message}`);
    t.not(called.code, Code.Unknown, `case ${i} (${m.how}): ${called.message}`);
    count(called.code === 'OK' ? 'pushed, call answered' : `pushed, call failed ${Code[called.code]}`);
  }
  t.log([...tally].map(([k, v]) => `${k}: ${v}`).join('; '));
  t.true((tally.get('refused at push') ?? 0) > 100, 'most mutations are refused at push');
  await stillServing(t, c, host.address);
});
