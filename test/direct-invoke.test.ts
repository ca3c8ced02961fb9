// A guest that imports nothing has its `invoke` called on its core instance, without jco's
// per-call task (src/runtime/worker/direct-invoke.ts). It must keep every rule the glue
// keeps: the same hostile guest, built with and without a host import, fails each attack
// the same way.
import test from 'ava';
import { buildFixture, fixture } from './fixtures/build.js';
import { ctx, manager } from './helpers/runtime.js';
import type { Runtime } from '../src/runtime/runtime.js';

/** hostile.wat with its one import (kv-get) made a local function that does nothing: no imports at all. */
const withoutImports = (wat: string) => {
  const line = '(import "plughost:plugin/host@0.1.0" "kv-get" (func $kv_get (param i32 i32 i32)))';
  if (!wat.includes(line)) throw new Error("hostile.wat's import changed");
  return wat.replace(line, '(func $kv_get (param i32 i32 i32))');
};

async function outcome(rt: Runtime, fn: string | undefined, args = new Uint8Array()): Promise<string> {
  try {
    const r = await rt.invoke(ctx({ kvAccess: 'none' }), fn, args);
    return r.ok ? `ok ${Buffer.from(r.value).toString()}` : `err ${r.guestError}`;
  } catch (e) {
    const err = e as { code: string; message: string };
    // the message up to the first detail that names a pointer or length
    return `${err.code} ${err.message.replace(/\d+/g, 'N')}`;
  }
}

test('a guest that imports nothing is called without jco\'s wrapper and breaks the same rules the same way as through it', async (t) => {
  const m = await manager(t, { limits: { maxMemoryBytes: 16 << 20, maxExecutionMs: 5000 } });
  const glue = await m.load(await fixture('hostile'), { name: 'glue' });
  const direct = await m.load(await buildFixture('hostile', withoutImports), { name: 'direct' });
  t.false(glue.component.directInvoke);
  t.true(direct.component.directInvoke);
  for (const fn of ['recurse', 'oob', 'hugelen', 'badutf8', undefined, '', 'a name']) {
    const [a, b] = [await outcome(glue, fn, new TextEncoder().encode('echo me')), await outcome(direct, fn, new TextEncoder().encode('echo me'))];
    t.is(b, a, `function ${JSON.stringify(fn)}`);
  }
  // traps drop the controller, as through the glue
  t.is(direct.stats().dropped.trap, glue.stats().dropped.trap);
  t.regex(await outcome(direct, 'badutf8'), /^TRAP the guest passed a string that is not valid UTF-N/);
  t.regex(await outcome(direct, 'oob'), /^TRAP /);
});

test('a guest that imports nothing answers many rows through the direct call, each as invoke would', async (t) => {
  const m = await manager(t);
  const echo = await m.load(await fixture('echo'));
  t.true(echo.component.directInvoke);
  const rows = Array.from({ length: 300 }, (_, i) => new Uint8Array(i).fill(i & 0xff));
  const out = await echo.invokeBatch(ctx({ kvAccess: 'none' }), 'any', rows);
  t.true(out.every((o, i) => o.ok && Buffer.compare(Buffer.from(o.value), Buffer.from(rows[i]!)) === 0));
});
