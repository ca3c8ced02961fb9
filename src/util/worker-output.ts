// What plughost's worker threads write to their own stdout and stderr (Node's warnings and
// debug lines, a library's console output, glue that prints): read line by line and handed
// to one sink, which the service points at its JSON log, so that nothing of theirs reaches
// the process's stderr raw. Rate-limited across all workers together (a worker that prints in
// a loop, or one restarted again and again, cannot flood the log), lines cut at 8 KiB.
import type { Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { LogLimiter } from './log-limiter.js';

export interface WorkerOutputLine {
  /** Which worker: `runtime-<id>` or `transpiler`. */
  worker: string;
  stream: 'stdout' | 'stderr';
  line: string;
}

export type WorkerOutputSink = (output: WorkerOutputLine) => void;

/** Lines per second kept from all workers together (a bucket holding one second's worth). */
export const WORKER_OUTPUT_LINES_PER_SECOND = 50;
/** Bytes per second kept, likewise. */
export const WORKER_OUTPUT_BYTES_PER_SECOND = 64 * 1024;
/** Longest line kept, in characters; a longer one is cut (and so is a line that does not end). */
export const MAX_OUTPUT_LINE = 8192;

const limiter = new LogLimiter(WORKER_OUTPUT_LINES_PER_SECOND, WORKER_OUTPUT_BYTES_PER_SECOND);
const BUCKET = 'workers';
let sink: WorkerOutputSink | undefined;

/**
 * Where workers' output goes from now on (the service: its logger, at warn); returns the
 * sink it replaces. Without one it goes to the process's stdout and stderr, as Node would
 * send it, but rate-limited and cut like the rest.
 */
export function setWorkerOutputSink(next: WorkerOutputSink | undefined): WorkerOutputSink | undefined {
  const previous = sink;
  sink = next;
  return previous;
}

/** Puts `previous` back, if `mine` is still the sink (another may have been set since). */
export function restoreWorkerOutputSink(mine: WorkerOutputSink, previous: WorkerOutputSink | undefined): void {
  if (sink === mine) sink = previous;
}

/** Lines of workers' output dropped over the rate, since the process started. */
export function workerOutputDropped(): number {
  return limiter.dropped.get(BUCKET) ?? 0;
}

function emit(worker: string, stream: 'stdout' | 'stderr', text: string): void {
  const line = text.length > MAX_OUTPUT_LINE ? text.slice(0, MAX_OUTPUT_LINE) : text;
  if (!limiter.admit(BUCKET, Buffer.byteLength(line))) return;
  if (sink) sink({ worker, stream, line });
  else process[stream].write(`${line}\n`);
}

/**
 * Node keeps the process alive while a worker's stdout or stderr is being read, even after
 * `worker.unref()` (it refs the worker's port on the first read, until the stream ends),
 * except for the streams it pipes to the process's own: it marks those with a flag, which
 * this sets too. Reading then keeps alive what the worker itself does: an idle, unref'd
 * transpiler worker lets the process end (test/compile.test.ts).
 */
function keepsNothingAlive(readable: Readable): void {
  for (const key of Object.getOwnPropertySymbols(readable)) {
    if (key.description === 'kIncrementsPortRef') (readable as unknown as Record<symbol, unknown>)[key] = false;
  }
}

/** Reads the stdout and stderr of `worker` (created with `stdout: true, stderr: true`) into the sink. */
export function captureOutput(worker: Worker, name: string): void {
  for (const stream of ['stdout', 'stderr'] as const) {
    const readable = worker[stream];
    keepsNothingAlive(readable);
    readable.setEncoding('utf8');
    let partial = '';
    /** The line going on was too long and has been cut: the rest of it is skipped. */
    let cut = false;
    readable.on('data', (chunk: string) => {
      const text = partial + chunk;
      partial = '';
      let at = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', at)) {
        if (!cut) emit(name, stream, text.slice(at, nl));
        cut = false;
        at = nl + 1;
      }
      if (cut) return;
      if (text.length - at > MAX_OUTPUT_LINE) {
        emit(name, stream, text.slice(at));
        cut = true;
      } else partial = text.slice(at);
    });
    readable.on('end', () => {
      if (partial) emit(name, stream, partial);
      partial = '';
    });
  }
}
