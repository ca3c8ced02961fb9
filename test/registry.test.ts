// The module registry on its own (no gRPC): a bare name resolves to its highest version,
// and follows every push and delete even though the resolution is cached.
import test from 'ava';
import { hashOf } from '../src/component/load.js';
import { isPlughostError } from '../src/errors.js';
import { ModuleRegistry } from '../src/registry/registry.js';
import { RuntimeManager } from '../src/runtime/manager.js';
import { fixture } from './fixtures/build.js';
import { tempDir } from './helpers/kv.js';

test('bare-name resolution follows each push and delete', async (t) => {
  const manager = await RuntimeManager.create({ workers: 1 });
  t.teardown(() => manager.close());
  const dir = tempDir(t);
  const registry = new ModuleRegistry({ dir, manager, maxModuleBytes: 1 << 20 });
  const [echo, counter, hash] = await Promise.all(['echo', 'counter', 'hash'].map(fixture));
  const v1 = { hash: hashOf(echo!), name: 'plug', version: '1.0.0' };
  const v12 = { hash: hashOf(counter!), name: 'plug', version: '1.2.0' };
  const notFound = (ref: string) => {
    const e = t.throws(() => registry.resolve(ref));
    t.true(isPlughostError(e, 'NOT_FOUND'), String(e));
  };

  notFound('plug');
  await registry.push({ name: 'plug', version: '1.0.0' }, echo!);
  t.deepEqual(registry.resolve('plug'), v1);
  t.deepEqual(registry.resolve('plug'), v1); // the second time from the cache

  await registry.push({ name: 'plug', version: '1.2.0' }, counter!);
  t.deepEqual(registry.resolve('plug'), v12);
  t.deepEqual(registry.resolve('plug'), v12);
  t.deepEqual(registry.resolve('plug@1.0.0'), v1);

  // another name's push changes the index too, and leaves plug's resolution as it was
  await registry.push({ name: 'other', version: '0.1.0' }, hash!);
  t.deepEqual(registry.resolve('other'), { hash: hashOf(hash!), name: 'other', version: '0.1.0' });
  t.deepEqual(registry.resolve('plug'), v12);

  t.deepEqual(await registry.delete('plug@1.2.0'), { removedAliases: ['plug@1.2.0'], moduleRemoved: true });
  t.deepEqual(registry.resolve('plug'), v1);
  notFound('plug@1.2.0');

  // a registry reopened on the same directory resolves the same
  t.deepEqual(new ModuleRegistry({ dir, manager, maxModuleBytes: 1 << 20 }).resolve('plug'), v1);

  await registry.delete('plug@1.0.0');
  notFound('plug');
  t.deepEqual(registry.resolve('other'), { hash: hashOf(hash!), name: 'other', version: '0.1.0' });
});
