import test from 'ava';
import { componentWit } from '@bytecodealliance/jco';
import { FIXTURE_NAMES, fixture } from './fixtures/build.js';
import { startServer } from '../src/service/server.js';
import { healthCheck, reflectionListServices } from './helpers/grpc-clients.js';

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

test('the server answers grpc.health.v1 and lists its services through reflection', async (t) => {
  const server = await startServer({ listen: '127.0.0.1:0' });
  t.teardown(() => server.close());
  t.true(server.port > 0);
  t.is(await healthCheck(server.address), 'SERVING');
  t.is(await healthCheck(server.address, 'plughost.v1.PluginService'), 'SERVING');
  const services = await reflectionListServices(server.address);
  for (const s of ['plughost.v1.PluginService', 'plughost.v1.ModuleService', 'grpc.health.v1.Health']) {
    t.true(services.includes(s), `reflection lists ${s}: ${services.join(', ')}`);
  }
  await server.close();
  await t.throwsAsync(healthCheck(server.address));
});
