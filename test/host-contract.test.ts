// The guest contract at push: every host function a component imports must be one
// wit/plugin.wit defines, with its type; otherwise the push is refused with a message that
// names the import (before, the first was accepted and trapped on every call with a raw jco
// message, and the second was served).
import test from 'ava';
import { readFileSync } from 'node:fs';
import { buildFixture, fixture } from './fixtures/build.js';
import { ctx, manager } from './helpers/runtime.js';
import { entryList, keyRange } from './helpers/canonical.js';
import { lmdbStore } from './helpers/kv.js';
import { isPlughostError } from '../src/errors.js';
import { HOST_FUNCTIONS, HOST_TYPES, PLUGIN_EXPORTS } from '../src/component/host-contract.js';
import { prepareGlue } from '../src/component/load.js';

test('the host-function table is wit/plugin.wit\'s host interface, name for name and type for type', (t) => {
  const wit = readFileSync(new URL('../wit/plugin.wit', import.meta.url), 'utf8');
  const host = /^interface host \{([\s\S]*?)^\}/m.exec(wit)![1]!;
  const defined = Object.fromEntries([...host.matchAll(/^\s+([a-z-]+): (func\(.*\).*);$/gm)].map((m) => [m[1], m[2]]));
  t.deepEqual(Object.fromEntries(Object.entries(HOST_FUNCTIONS).map(([name, f]) => [name, f.wit])), defined);
});

test('the host types table is wit/plugin.wit\'s types interface, written out', (t) => {
  const wit = readFileSync(new URL('../wit/plugin.wit', import.meta.url), 'utf8');
  const types = /^interface types \{([\s\S]*?)^\}/m.exec(wit)![1]!;
  const defined = Object.fromEntries([
    ...[...types.matchAll(/^\s+type ([a-z-]+) = (.*);$/gm)].map((m) => [m[1], m[2]]),
    ...[...types.matchAll(/^\s+(record|enum) ([a-z-]+) (\{.*\})$/gm)].map((m) => [m[2], `${m[1]} ${m[3]}`]),
  ]);
  t.deepEqual({ ...HOST_TYPES }, defined);
});

test('the plugin world\'s exports table is wit/plugin.wit\'s world plugin, name for name and type for type', (t) => {
  const wit = readFileSync(new URL('../wit/plugin.wit', import.meta.url), 'utf8');
  const world = /^world plugin \{([\s\S]*?)^\}/m.exec(wit)![1]!;
  const defined = Object.fromEntries([...world.matchAll(/^\s+export ([a-z-]+): (func\(.*\).*);$/gm)].map((m) => [m[1], m[2]]));
  t.deepEqual({ ...PLUGIN_EXPORTS }, defined);
});

test('a component exporting what the plugin world does not define, or an export with another type, is refused at load naming it', async (t) => {
  const m = await manager(t);
  const mistyped = await t.throwsAsync(m.load(await fixture('mistyped-export')));
  t.true(isPlughostError(mistyped, 'INVALID_MODULE'), String(mistyped));
  t.is(mistyped!.message, 'component exports list-functions: func() -> list<string>, but wit/plugin.wit says list-functions: func() -> list<option<string>>');
  const unknown = await t.throwsAsync(m.load(await fixture('unknown-export')));
  t.true(isPlughostError(unknown, 'INVALID_MODULE'), String(unknown));
  t.regex(unknown!.message, /^component exports frob, which the plugin world \(wit\/plugin\.wit\) does not define; it defines invoke, invoke-batch, init, list-functions/);
  t.is(m.stats().runtimes, 0);
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

test('a host function imported with a type that lowers like its own (list<u8> for string) is refused at load, naming it and wit/plugin.wit\'s type', async (t) => {
  const m = await manager(t);
  // kv-get(key: list<u8>) and log(level, message: list<u8>): core types (i32, i32, i32) -> () both, as wit/plugin.wit's
  const both = await t.throwsAsync(m.load(await fixture('alike-import')));
  t.true(isPlughostError(both, 'INVALID_MODULE'), String(both));
  t.is(both!.message, 'component imports plughost:plugin/host@0.1.0 "kv-get" as func(key: list<u8>) -> result<option<list<u8>>, string>, but wit/plugin.wit says kv-get: func(key: string) -> result<option<value>, string>');
  const log = await t.throwsAsync(m.load(await buildFixture('alike-import', (w) => w.replace(/^ *\(import "plughost:plugin\/host@0\.1\.0" "kv-get".*\n/m, ''))));
  t.true(isPlughostError(log, 'INVALID_MODULE'), String(log));
  t.is(log!.message, 'component imports plughost:plugin/host@0.1.0 "log" as func(level: enum { trace, debug, info, warn, error }, message: list<u8>), but wit/plugin.wit says log: func(level: log-level, message: string)');
  t.is(m.stats().runtimes, 0, 'nothing was loaded');
  // every host function imported as wit/plugin.wit has it is read back as its own type
  const imports = Object.entries(HOST_FUNCTIONS).map(([name, f]) => `(import "plughost:plugin/host@0.1.0" "${name}" (func (param ${'i32 '.repeat(f.params).trim()})))`);
  const all = await m.load(await buildFixture('echo', (w) => w.replace('(module', `(module\n  ${imports.join('\n  ')}`)));
  t.deepEqual([...all.component.hostImports].sort(), Object.keys(HOST_FUNCTIONS).sort());
});

test('the glue jco makes prints nothing to stderr itself (its raw "ERROR:" lines are taken out; the errors still throw)', (t) => {
  const glue = prepareGlue('export function instantiate() {\n  const err = new Error("x");\n  console.error("ERROR:", err.toString());\n  throw err;\n}\n');
  t.false(/console\.error/.test(glue));
  const { instantiate } = new Function(glue)() as { instantiate(): void };
  t.throws(() => instantiate(), { message: 'x' });
});

test('a cabi_realloc that answers a misaligned pointer, or one where the bytes do not fit, traps the call instead of being written through', async (t) => {
  const m = await manager(t, { store: lmdbStore(t) });
  // the prelude's allocator ends by answering its pointer: make it lie
  const lie = (answer: string) => (wat: string) => {
    const end = '(select (local.get $oldsz) (local.get $newsz) (i32.lt_u (local.get $oldsz) (local.get $newsz))))))\n    (local.get $p))';
    if (!wat.includes(end)) throw new Error('the prelude\'s cabi_realloc changed');
    return wat.replace(end, end.replace(/\(local\.get \$p\)\)$/, `${answer})`));
  };
  // kv-keys hands the guest a list<string>: the host asks for 4-byte alignment
  const misaligned = await m.load(await buildFixture('kv-batch', lie('(select (i32.add (local.get $p) (i32.const 1)) (local.get $p) (i32.gt_u (local.get $align) (i32.const 1)))')), { name: 'misaligned' });
  const store = await m.load(await fixture('kv-batch'), { name: 'misaligned' });
  t.true((await store.invoke(ctx(), 'set-batch', entryList([['a', 'A']]))).ok);
  const e = await t.throwsAsync(misaligned.invoke(ctx(), 'keys', keyRange({})));
  t.true(isPlughostError(e, 'TRAP'), String(e));
  t.regex(e!.message, /cabi_realloc returned \d+, which is not aligned to 4/);
  // the args of any call are copied in through it: a pointer past the end of memory
  const outOfBounds = await m.load(await buildFixture('echo', lie('(i32.const 0x7ffffff0)')));
  const oob = await t.throwsAsync(outOfBounds.invoke(ctx(), undefined, new Uint8Array(16)));
  t.true(isPlughostError(oob, 'TRAP'), String(oob));
  t.regex(oob!.message, /cabi_realloc returned 2147483632, where 16 bytes do not fit in the guest memory of \d+ bytes/);
});
