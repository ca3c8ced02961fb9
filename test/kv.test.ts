import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { lmdbStore, tempDir } from './helpers/kv.js';
import { kvSuite } from './helpers/kv-suite.js';
import { LmdbKvStore } from '../src/kv/lmdb-store.js';
import { DEFAULT_KV_LIMITS } from '../src/runtime/options.js';

kvSuite({ name: 'lmdb', store: async (t) => lmdbStore(t, { lockTimeoutMs: 60_000 }) });

test.serial('a child that acknowledged writes and was killed with SIGKILL loses none of them', async (t) => {
  const dir = join(tempDir(t), 'kv');
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/kv-writer.ts', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked: number[] = [];
  let partial = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${acked.length} acks in 20 s`)), 20_000);
    child.stdout.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop()!;
      for (const l of lines) acked.push(Number(l));
      if (acked.length >= 300) {
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.once('exit', () => reject(new Error('writer exited early')));
  });
  await new Promise((r) => child.once('exit', r));
  const reopened = new LmdbKvStore({ path: dir });
  t.teardown(() => reopened.close());
  const read = reopened.begin({ tenant: 't', module: 'durable' }, 'read', DEFAULT_KV_LIMITS);
  for (const i of acked) {
    t.true(await read.apply('kvExists', [`k${i}`]), `k${i} survived`);
  }
  // no torn batch: every key has its twin
  const keys = (await read.apply('kvKeys', [{ limit: 10_000, reverse: false }])) as string[];
  const singles = keys.filter((k) => !k.endsWith('-twin'));
  t.is(keys.length, singles.length * 2);
  t.true(singles.length >= acked.length);
});
