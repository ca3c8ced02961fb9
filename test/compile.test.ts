// Compiling a component: jco's work (componentWit, transpileBytes) runs in the transpiler
// worker, never on the main thread, and the results and refusals are what they always were.
// No test here measures speed: only where the work runs, and what comes back.
import test from 'ava';
import { closeTranspiler, compileComponent, hashOf, transpilerStats } from '../src/component/load.js';
import { Transpiler } from '../src/component/transpiler.js';
import { isPlughostError } from '../src/errors.js';
import { fixture } from './fixtures/build.js';
import { runProcess } from './helpers/cli.js';

const LIMITS = { maxMemoryBytes: 16 << 20 };

/** Blocks the main thread (no event-loop turn at all) until `done()` or `ms` pass. */
function blockUntil(done: () => boolean, ms: number): boolean {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) return false;
    Atomics.wait(nap, 0, 0, 5);
  }
  return true;
}

test.serial("jco's work finishes while the main thread is blocked: it runs on another thread", async (t) => {
  const echo = await fixture('echo');
  const before = transpilerStats().jobsDone;
  const compiling = compileComponent(echo, LIMITS);
  // The main thread neither returns to its event loop nor runs jco from here on; only
  // another thread can make jco's work progress. (Before the worker, this never returned true.)
  t.true(
    blockUntil(() => transpilerStats().jobsDone > before, 30_000),
    'componentWit never ran while the main thread was blocked',
  );
  const compiled = await compiling;
  t.is(compiled.hash, hashOf(echo));
  t.deepEqual([...compiled.exports], ['invoke']);
  t.true(Object.keys(compiled.coreModules).length > 0);
  t.true(Object.values(compiled.coreModules).every((m) => m instanceof WebAssembly.Module));
  t.regex(compiled.glue, /return \{ instantiate \};$/);
  // componentWit and transpileBytes, both in the worker
  t.is(transpilerStats().jobsDone, before + 2);
  t.is(transpilerStats().pending, 0);
});

test.serial("the main thread's event loop keeps turning while a module compiles", async (t) => {
  const bytes = await fixture('introspect');
  let turns = 0;
  let compiling = true;
  const spin = () => {
    if (!compiling) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const compiled = await compileComponent(bytes, LIMITS);
  compiling = false;
  t.is(compiled.hash, hashOf(bytes));
  // jco ran on the main thread before, synchronously: no turn at all happened during a compile
  t.true(turns > 0, `the event loop turned ${turns} times while the module compiled`);
});

test.serial('concurrent compiles each get their own result or refusal', async (t) => {
  const [echo, introspect, otherWorld, wasiImport] = await Promise.all(['echo', 'introspect', 'other-world', 'wasi-import'].map(fixture));
  const truncated = echo!.subarray(0, echo!.length - 40);
  const before = transpilerStats().jobsDone;
  const results = await Promise.allSettled([echo!, introspect!, otherWorld!, wasiImport!, truncated, introspect!, echo!].map((b) => compileComponent(b, LIMITS)));
  const value = (i: number) => {
    const r = results[i]!;
    if (r.status === 'rejected') throw r.reason;
    return r.value;
  };
  const refusal = (i: number) => {
    const r = results[i]!;
    if (r.status === 'fulfilled') throw new Error(`compile ${i} succeeded`);
    t.true(isPlughostError(r.reason, 'INVALID_MODULE'), String(r.reason));
    return (r.reason as Error).message;
  };
  t.is(value(0).hash, hashOf(echo!));
  t.deepEqual([...value(0).exports], ['invoke']);
  t.is(value(1).hash, hashOf(introspect!));
  t.deepEqual([...value(1).exports].sort(), ['functionArgs', 'functionComment', 'functionReturns', 'functionWriteable', 'invoke', 'listFunctions']);
  t.regex(refusal(2), /does not export invoke \(it exports run\)/);
  t.regex(refusal(3), /component imports "wasi:cli\/environment@0\.2\.0"; plugins may import only plughost:plugin\/host@0\.1\.0/);
  t.regex(refusal(4), /^malformed component: /);
  t.is(value(5).hash, hashOf(introspect!));
  t.is(value(6).hash, hashOf(echo!));
  // four full compiles (componentWit + transpileBytes), two refused by the world check
  // after componentWit, one refused by componentWit itself
  t.is(transpilerStats().jobsDone - before, 4 * 2 + 2 + 1);
});

test.serial('the caller keeps its bytes, whatever buffer they are in: the worker gets a copy', async (t) => {
  const echo = await fixture('echo');
  const plain = new Uint8Array(echo);
  // a Buffer with a buffer of its own, as readFileSync returns (a Buffer's slice() is a view, not a copy)
  const fromFile = Buffer.allocUnsafeSlow(echo.length);
  fromFile.set(echo);
  // a view into a larger buffer, beside other data
  const shared = Buffer.allocUnsafeSlow(echo.length + 16).fill(7);
  const view = shared.subarray(16);
  view.set(echo);
  // a small Buffer in Node's shared pool
  const pooled = Buffer.from(echo.subarray(0, 8)); // a component's header alone: an empty component
  for (const bytes of [plain, fromFile, view]) t.is((await compileComponent(bytes, LIMITS)).hash, hashOf(echo));
  await t.throwsAsync(compileComponent(pooled, LIMITS), { message: /does not export invoke \(it exports nothing\)/ });
  for (const bytes of [plain, fromFile, view]) t.is(hashOf(bytes), hashOf(echo));
  t.deepEqual([...shared.subarray(0, 16)], new Array(16).fill(7));
  t.deepEqual([...pooled], [...echo.subarray(0, 8)]);
});

test.serial('closing the transpiler fails compiles in flight with UNAVAILABLE; the next compile starts a new worker', async (t) => {
  const echo = await fixture('echo');
  const started = transpilerStats().workersStarted;
  const compiling = compileComponent(echo, LIMITS);
  await closeTranspiler();
  const e = await t.throwsAsync(compiling);
  t.true(isPlughostError(e, 'UNAVAILABLE'), String(e));
  t.like(transpilerStats(), { running: false, pending: 0 });
  t.is((await compileComponent(echo, LIMITS)).hash, hashOf(echo));
  t.like(transpilerStats(), { running: true, workersStarted: started + 1 });
});

test('a process that compiles exits on its own: the idle worker does not keep it alive, a busy one is not cut short', async (t) => {
  const echo = await fixture('echo');
  const script = `
    import { compileComponent } from ${JSON.stringify(new URL('../src/component/load.ts', import.meta.url).href)};
    let hex = '';
    for await (const chunk of process.stdin) hex += chunk;
    const compiled = await compileComponent(Buffer.from(hex, 'hex'), { maxMemoryBytes: 1 << 20 });
    console.log(compiled.hash);`;
  // no closeTranspiler(): the process must end by itself (the 30 s kill would give code null)
  const r = await runProcess(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { input: Buffer.from(echo).toString('hex') });
  t.is(r.stderr, '');
  t.is(r.code, 0);
  t.is(r.stdout.trim(), hashOf(echo));
});

// A stand-in worker: dies (exit code 7) on a request whose bytes start with 0xde, answers others.
const CRASHING_WORKER = new URL(
  `data:text/javascript,${encodeURIComponent(`
import { parentPort } from 'node:worker_threads';
parentPort.on('message', ({ id, bytes }) => {
  if (bytes[0] === 0xde) process.exit(7);
  parentPort.postMessage({ id, ok: true, op: 'wit', wit: 'stub of ' + bytes.length + ' bytes' });
});`)}`,
);

test('a crashed worker fails every request in flight with INTERNAL, and the next request starts another', async (t) => {
  const transpiler = new Transpiler({ entry: CRASHING_WORKER });
  t.teardown(() => transpiler.close());
  t.is(await transpiler.wit(new Uint8Array(3)), 'stub of 3 bytes');
  const crashing = transpiler.wit(new Uint8Array([0xde, 0xad]));
  const behind = transpiler.wit(new Uint8Array(5));
  for (const p of [crashing, behind]) {
    const e = await t.throwsAsync(p);
    t.true(isPlughostError(e, 'INTERNAL'), String(e));
    t.regex(e!.message, /transpiler worker exited \(code 7\)/);
  }
  t.like(transpiler.stats(), { running: false, pending: 0, workersStarted: 1 });
  t.is(await transpiler.wit(new Uint8Array(4)), 'stub of 4 bytes');
  t.like(transpiler.stats(), { running: true, pending: 0, workersStarted: 2 });
});
