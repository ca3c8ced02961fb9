// What plughost's worker threads print themselves (#15) goes to the service's JSON log at
// warn, with the worker's name, and never raw to the process's stderr; a worker that prints
// in a loop cannot flood the log (util/worker-output.ts).
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { clients, pushFixture } from './helpers/service.js';
import { tempDir } from './helpers/kv.js';
import { startServeProcess } from './helpers/serve-process.js';
import { waitFor } from './helpers/wait.js';
import { MAX_OUTPUT_LINE, WORKER_OUTPUT_LINES_PER_SECOND, captureOutput, restoreWorkerOutputSink, setWorkerOutputSink, workerOutputDropped, type WorkerOutputLine } from '../src/util/worker-output.js';

test.serial('a worker\'s own output reaches the JSON log at warn with its name, and nothing of it the service\'s stderr', async (t) => {
  // NODE_DEBUG=worker: Node itself prints a few lines from each worker thread as it starts
  // ("WORKER <pid>: [<thread>] is setting up worker child environment"), on the worker's
  // stderr; the main thread's own lines ([0]) are the main thread's, printed raw by Node
  const served = await startServeProcess(tempDir(t), { NODE_DEBUG: 'worker' }, { stdout: true });
  t.teardown(() => served.child.kill('SIGKILL'));
  // a push starts the transpiler worker too; a call, the runtime workers' controllers
  const c = clients(t, served.address, served.token);
  await pushFixture(c, 'echo');
  await c.plugins.invoke({ module: 'echo', args: new Uint8Array([1]) });
  const fromWorkers = () => served.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; worker?: string; stream?: string; msg: string }).filter((l) => l.worker);
  t.true(await waitFor(() => new Set(fromWorkers().map((l) => l.worker)).has('transpiler'), 10_000), served.stdout());
  const lines = fromWorkers();
  for (const name of ['runtime-1', 'runtime-2', 'runtime-3', 'transpiler']) {
    const line = lines.find((l) => l.worker === name && /^WORKER \d+: \[\d+\] is setting up worker child environment$/.test(l.msg));
    t.truthy(line, `${name} in ${JSON.stringify(lines)}`);
    t.is(line?.level, 40, 'warn');
    t.is(line?.stream, 'stderr');
  }
  // raw on stderr: no line of any thread the log has lines of. The service runs under tsx here,
  // whose module hooks run in a thread of Node's own (internal/modules/esm/worker), not plughost's
  const thread = (l: string) => /^WORKER \d+: \[(\d+)\]/.exec(l)?.[1];
  const raw = served.stderr().split('\n').filter((l) => thread(l) !== undefined && thread(l) !== '0');
  const loader = new Set(raw.filter((l) => /starts worker script internal\/modules\/esm\/worker/.test(l)).map(thread));
  const ours = new Set<string | undefined>(lines.map((l) => thread(l.msg)).filter((n) => n !== undefined));
  t.deepEqual(raw.filter((l) => ours.has(thread(l)) || !loader.has(thread(l))), [], 'no line of a plughost worker on the raw stderr');
  t.regex(served.stderr(), /^WORKER \d+: \[0\] create new worker/m, 'the main thread\'s own debug lines are there, raw (they are no worker\'s)');
});

test.serial('a worker printing in a loop is cut to the rate, every line dropped is counted, and a line too long is cut', async (t) => {
  const got: WorkerOutputLine[] = [];
  const sink = (l: WorkerOutputLine) => got.push(l);
  const previous = setWorkerOutputSink(sink);
  t.teardown(() => restoreWorkerOutputSink(sink, previous));
  /** Runs `source` in a worker whose output is captured; resolves once all of its `lines` are kept or dropped. */
  const run = async (name: string, source: string, lines: number) => {
    const kept = got.length;
    const dropped = workerOutputDropped();
    const worker = new Worker(source, { eval: true, stdout: true, stderr: true });
    captureOutput(worker, name);
    await new Promise((resolve) => worker.once('exit', resolve));
    // the streams end after the exit
    t.true(await waitFor(() => got.length - kept + workerOutputDropped() - dropped === lines, 10_000), `${name}: ${got.length - kept} kept, ${workerOutputDropped() - dropped} dropped of ${lines}`);
    return { kept: got.slice(kept), dropped: workerOutputDropped() - dropped };
  };
  // 4 lines' worth of one line, in several chunks, then a short one
  const long = await run('long', `process.stdout.write('x'.repeat(${MAX_OUTPUT_LINE * 4}) + '\\nshort\\n');`, 2);
  t.deepEqual(long.kept, [{ worker: 'long', stream: 'stdout', line: 'x'.repeat(MAX_OUTPUT_LINE) }, { worker: 'long', stream: 'stdout', line: 'short' }]);

  const t0 = performance.now();
  const noisy = await run('noisy', 'for (let i = 0; i < 5000; i++) console.error("line " + i);', 5000);
  const seconds = (performance.now() - t0) / 1000;
  // what was left in the bucket (at most one second's worth), plus what refilled while it ran
  t.true(noisy.kept.length >= 1 && noisy.kept.length <= WORKER_OUTPUT_LINES_PER_SECOND * (1 + seconds) + 1, `${noisy.kept.length} lines kept in ${seconds.toFixed(2)} s`);
  t.is(noisy.dropped, 5000 - noisy.kept.length);
  t.deepEqual(noisy.kept[0], { worker: 'noisy', stream: 'stderr', line: 'line 0' });
  t.log(`${noisy.kept.length} of 5000 lines kept in ${seconds.toFixed(2)} s, ${noisy.dropped} dropped`);
});
