// The guest contract at push: every host function a component imports must be one
// wit/plugin.wit defines, with its type; otherwise the push is refused with a message that
// names the import (before, the first was accepted and trapped on every call with a raw jco
// message, and the second was served).
import test from 'ava';
import { readFileSync } from 'node:fs';
import { fixture } from './fixtures/build.js';
import { manager } from './helpers/runtime.js';
import { isPlughostError } from '../src/errors.js';
import { HOST_FUNCTIONS } from '../src/component/host-contract.js';
import { prepareGlue } from '../src/component/load.js';

test('the host-function table is wit/plugin.wit\'s host interface, name for name and type for type', (t) => {
  const wit = readFileSync(new URL('../wit/plugin.wit', import.meta.url), 'utf8');
  const host = /^interface host \{([\s\S]*?)^\}/m.exec(wit)![1]!;
  const defined = Object.fromEntries([...host.matchAll(/^\s+([a-z-]+): (func\(.*\).*);$/gm)].map((m) => [m[1], m[2]]));
  t.deepEqual(Object.fromEntries(Object.entries(HOST_FUNCTIONS).map(([name, f]) => [name, f.wit])), defined);
});

test('a component importing a host function the WIT does not define, one with another type, or another version of the host interface, is refused at load with a message naming it', async (t) => {
  const m = await manager(t);
  const unknown = await t.throwsAsync(m.load(await fixture('unknown-import')));
  t.true(isPlughostError(unknown, 'INVALID_MODULE'), String(unknown));
  t.regex(unknown!.message, /imports "kv-frobnicate" from plughost:plugin\/host@0\.1\.0, which wit\/plugin\.wit does not define \(it defines kv-get, kv-set/);
  const mistyped = await t.throwsAsync(m.load(await fixture('mistyped-import')));
  t.true(isPlughostError(mistyped, 'INVALID_MODULE'), String(mistyped));
  t.regex(mistyped!.message, /imports plughost:plugin\/host@0\.1\.0 "kv-get" with another type than wit\/plugin\.wit's kv-get: func\(key: string\) -> result<option<value>, string> \(core module .* has \(i32\) -> \(i32\), the WIT lowers to \(i32, i32, i32\) -> \(\)\)/);
  const v2 = await t.throwsAsync(m.load(await fixture('host-v2')));
  t.true(isPlughostError(v2, 'INVALID_MODULE'), String(v2));
  t.regex(v2!.message, /component imports "plughost:plugin\/types@0\.2\.0", "plughost:plugin\/host@0\.2\.0"; plugins may import only plughost:plugin\/host@0\.1\.0/);
  t.is(m.stats().runtimes, 0, 'nothing was loaded');
});

test('the glue jco makes prints nothing to stderr itself (its raw "ERROR:" lines are taken out; the errors still throw)', (t) => {
  const glue = prepareGlue('export function instantiate() {\n  const err = new Error("x");\n  console.error("ERROR:", err.toString());\n  throw err;\n}\n');
  t.false(/console\.error/.test(glue));
  const { instantiate } = new Function(glue)() as { instantiate(): void };
  t.throws(() => instantiate(), { message: 'x' });
});
