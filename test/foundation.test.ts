import test from 'ava';
import { componentWit } from '@bytecodealliance/jco';
import { FIXTURE_NAMES, fixture } from './fixtures/build.js';

const REQUIRED_FIXTURES = ['echo', 'counter', 'kv', 'faults', 'slow-init', 'failing-init', 'introspect'];

test('the fixture builder makes every listed guest as a component', async (t) => {
  for (const name of REQUIRED_FIXTURES) t.true(FIXTURE_NAMES.includes(name), `fixture ${name} exists`);
  for (const name of FIXTURE_NAMES) {
    const bytes = await fixture(name);
    // component preamble: magic, then layer 1 (a core module would have version 1, layer 0)
    t.deepEqual([...bytes.subarray(0, 8)], [0, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00], name);
  }
  const wit = await componentWit(await fixture('introspect'));
  for (const e of ['invoke', 'list-functions', 'function-args', 'function-returns', 'function-writeable', 'function-comment']) {
    t.true(wit.includes(`export ${e}:`), `introspect exports ${e}`);
  }
  t.false((await componentWit(await fixture('echo'))).includes('export init:'));
});
