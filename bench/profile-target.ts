// The process that bench/profile.ts profiles (run it through `npm run bench -- --profile`,
// not directly): started as `node --cpu-prof --cpu-prof-dir=DIR --cpu-prof-interval=US
// --import tsx bench/profile-target.ts OUT.json SECONDS [--grpc]`. It runs timed phases
// of echo calls (sequential and 16 in flight through the Runtime API; with --grpc, unary
// c=16 and one Stream of 64 against an in-process service, loaded from a child process)
// and writes each phase's time window (µs on the profiles' clock) and checked call
// counts to OUT.json. It uses only RuntimeManager.create / load / invoke / close and
// fixture('echo'), so that it survives changes inside the runtime.
//
// The runtime starts its workers with `execArgv: []`, which drops --cpu-prof: so before
// the runtime is imported, node:worker_threads' Worker is replaced by a subclass that
// adds this process's --cpu-prof flags to every worker's execArgv (one profile per worker,
// written when it exits, also on terminate()).
import { findSourceMap, syncBuiltinESMExports } from 'node:module';
import workerThreads from 'node:worker_threads';

const profFlags = process.execArgv.filter((a) => a.startsWith('--cpu-prof'));
const BaseWorker = workerThreads.Worker;
class ProfiledWorker extends BaseWorker {
  constructor(filename: string | URL, options: workerThreads.WorkerOptions = {}) {
    const execArgv = [...(options.execArgv ?? process.execArgv).filter((a) => !a.startsWith('--cpu-prof')), ...profFlags];
    super(filename, { ...options, execArgv });
  }
}
workerThreads.Worker = ProfiledWorker;
syncBuiltinESMExports();

const { writeFileSync, mkdtempSync, readdirSync, rmSync } = await import('node:fs');
const { tmpdir } = await import('node:os');
const { join } = await import('node:path');
const { fork } = await import('node:child_process');
const { fileURLToPath, pathToFileURL } = await import('node:url');
const { RuntimeManager } = await import('../src/runtime/manager.js');
const { fixture } = await import('../test/fixtures/build.js');

export interface Phase {
  name: string;
  /** Profile clock (µs, monotonic: the clock of the .cpuprofile timestamps). */
  startUs: number;
  endUs: number;
  calls: number;
  errors: number;
  firstError?: string;
}

/** What the target writes to OUT.json. */
export interface TargetReport {
  pid: number;
  phases: Phase[];
  /**
   * Source maps (without sources) of the TypeScript files this process loaded, by file:
   * URL: tsx compiles them to one line each, so the profiles' positions need mapping.
   */
  sourceMaps: Record<string, unknown>;
}

const [out, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? 2);
const grpc = process.argv.includes('--grpc');
if (!out || !(seconds > 0)) throw new Error('usage: profile-target.ts OUT.json SECONDS [--grpc]');

// never outlive the profiler's parent by much, whatever hangs
const hardStop = setTimeout(() => {
  console.error('profile target: hard stop');
  process.exit(2);
}, (seconds * (grpc ? 6 : 3) + 60) * 1000);
hardStop.unref();

const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const phases: Phase[] = [];
const args = new Uint8Array(64).map((_, i) => i);
const ctx = { subject: 'profile', tenant: 'profile', kvAccess: 'none' as const };
const echoes = (r: { ok: boolean; value?: Uint8Array }) => r.ok && r.value !== undefined && Buffer.compare(r.value, args) === 0;

type Echo = { invoke(c: typeof ctx, fn: string | undefined, a: Uint8Array): Promise<{ ok: true; value: Uint8Array } | { ok: false; guestError: string }> };

/** Calls kept `depth` in flight (1 = sequential) until `ms` have passed, each checked. */
async function drive(rt: Echo, depth: number, ms: number) {
  const end = performance.now() + ms;
  const c = { calls: 0, errors: 0, firstError: undefined as string | undefined };
  await Promise.all(Array.from({ length: depth }, async () => {
    while (performance.now() < end) {
      try {
        const r = await rt.invoke(ctx, undefined, args);
        if (echoes(r as { ok: boolean; value?: Uint8Array })) c.calls++;
        else {
          c.errors++;
          c.firstError ??= r.ok ? `wrong value (${r.value.length} B)` : `guest error: ${r.guestError}`;
        }
      } catch (e) {
        c.errors++;
        c.firstError ??= `threw: ${e instanceof Error ? e.message : String(e)}`;
      }
    }
  }));
  return c;
}

async function phase(name: string, run: () => Promise<{ calls: number; errors: number; firstError?: string }>) {
  const startUs = nowUs();
  const c = await run();
  const endUs = nowUs();
  phases.push({ name, startUs, endUs, calls: c.calls, errors: c.errors, ...(c.firstError !== undefined && { firstError: c.firstError }) });
  console.error(`  ${name}: ${c.calls} calls${c.errors ? `, ${c.errors} ERRORS (${c.firstError})` : ''}`);
}

const manager = await RuntimeManager.create({ workers: 2 });
try {
  const echo = await manager.load(await fixture('echo'), { name: 'echo' });
  await drive(echo, 1, 300); // warm-up: JIT, controllers on both workers
  await drive(echo, 16, 300);
  await phase('Runtime API, sequential', () => drive(echo, 1, seconds * 1000));
  await phase('Runtime API, 16 in flight', () => drive(echo, 16, seconds * 1000));
} finally {
  await manager.close();
}

if (grpc) {
  const { Plughost } = await import('../src/service/plughost.js');
  const dataDir = mkdtempSync(join(tmpdir(), 'plughost-profile-'));
  // the load runs in its own process, not profiled (its own execArgv: no --cpu-prof)
  const client = fork(fileURLToPath(new URL('./load-client.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const clientExited = new Promise<void>((r) => client.once('exit', () => r()));
  const host = await Plughost.start({ listen: '127.0.0.1:0', dataDir, workers: 2, stream: { defaultWindow: 64, maxWindow: 65536 }, metrics: { listen: '' }, log: { level: 'warn' } });
  try {
    await host.registry.push({ name: 'echo', version: '1.0.0' }, await fixture('echo'));
    await host.registry.push({ name: 'batch-echo', version: '1.0.0' }, await fixture('batch-echo'));
    const { token } = await host.tokens.add({ subject: 'profile', tenant: 'profile', admin: false, modules: ['*'], kv: 'none' });
    type Result = { ops: number; errors: number; firstError?: string };
    const load = (mode: 'unary' | 'stream', concurrency: number, s: number, batch?: { rows: number; module: string }) =>
      new Promise<Result>((resolve, reject) => {
        client.once('message', (m: { result?: Result; error?: string }) => (m.result ? resolve(m.result) : reject(new Error(`load client: ${m.error}`))));
        client.send({ address: host.address, token, mode, concurrency, seconds: s, bytes: 64, module: batch?.module ?? 'echo', expect: 'echo', batch: batch?.rows });
      });
    await load('unary', 16, 0.3);
    await load('stream', 64, 0.3);
    const asCalls = (r: Result) => ({ calls: r.ops, errors: r.errors, firstError: r.firstError });
    await phase('gRPC Invoke, c=16', async () => asCalls(await load('unary', 16, seconds)));
    await phase('gRPC Stream, 64 outstanding', async () => asCalls(await load('stream', 64, seconds)));
    // a call here is a row: batches of 1,024, four in flight
    await load('stream', 4096, 0.3, { rows: 1024, module: 'echo' });
    await phase('gRPC Stream, batches of 1,024 rows (per-row invoke)', async () => asCalls(await load('stream', 4096, seconds, { rows: 1024, module: 'echo' })));
    await phase('gRPC Stream, batches of 1,024 rows (invoke-batch)', async () => asCalls(await load('stream', 4096, seconds, { rows: 1024, module: 'batch-echo' })));
  } finally {
    client.disconnect();
    await clientExited;
    await host.close(1000);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Source maps of the repo's TypeScript files that were loaded here (tsx registers them). */
function loadedSourceMaps(): Record<string, unknown> {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const maps: Record<string, unknown> = {};
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (/\.[cm]?tsx?$/.test(e.name)) {
        const url = pathToFileURL(path).href;
        const map = findSourceMap(url) ?? findSourceMap(path);
        if (map) maps[url] = { ...map.payload, sourcesContent: undefined };
      }
    }
  };
  for (const d of ['src', 'bench', 'test', 'gen', 'examples']) walk(join(root, d));
  return maps;
}

const report: TargetReport = { pid: process.pid, phases, sourceMaps: loadedSourceMaps() };
writeFileSync(out, JSON.stringify(report));
