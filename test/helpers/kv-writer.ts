// Child process for the durability test: commits writes from 8 concurrent "calls" and
// prints each key once its commit has resolved (what the service would acknowledge).
import { LmdbKvStore } from '../../src/kv/lmdb-store.js';
import { DEFAULT_KV_LIMITS } from '../../src/runtime/options.js';

const store = new LmdbKvStore({ path: process.argv[2]! });
let next = 0;
async function writer(): Promise<void> {
  for (;;) {
    const i = next++;
    const txn = store.begin({ tenant: 't', module: 'durable' }, 'write', DEFAULT_KV_LIMITS);
    // a small batch: the test also checks that no batch is torn
    await txn.apply('kvSetBatch', [[[`k${i}`, Buffer.from(`v${i}`)], [`k${i}-twin`, Buffer.from(`v${i}`)]]]);
    await txn.commit();
    process.stdout.write(`${i}\n`);
  }
}
await Promise.all(Array.from({ length: 8 }, writer));
