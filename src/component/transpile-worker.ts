// The transpiler worker: runs jco (componentWit, transpileBytes) off the thread that
// serves gRPC. Requests may overlap; each reply carries its request's id. jco refusing the
// bytes is a reply (`ok: false`), never a crash: a crash is a bug or an exhausted worker,
// and the main thread fails what was in flight and starts another worker.
import { transpileBytes } from '@bytecodealliance/jco-transpile';
import { componentWit } from '@bytecodealliance/jco-transpile/wasm-tools';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { messageOf } from '../util/message-of.js';
import type { TranspileReply, TranspileRequest, TranspilerInit } from './transpiler.js';

const init = workerData as TranspilerInit;
const jobs = new Int32Array(init.jobs);
const port = parentPort as MessagePort;

/** The options plughost has always transpiled with (`noTypescript` is not in jco's types). */
const TRANSPILE_OPTIONS = { name: 'plugin', instantiation: { tag: 'sync' }, noTypescript: true } as Parameters<typeof transpileBytes>[1];

/**
 * The file contents as Uint8Arrays that own their whole buffer, and those buffers to transfer
 * (a view into a larger or shared buffer is copied first).
 */
function transferable(files: Record<string, Uint8Array | string>): [Record<string, Uint8Array>, ArrayBuffer[]] {
  const out: Record<string, Uint8Array> = {};
  const buffers = new Set<ArrayBuffer>();
  for (const [name, content] of Object.entries(files)) {
    let bytes = typeof content === 'string' ? new TextEncoder().encode(content) : content;
    const whole = bytes.buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    // a copy (new Uint8Array copies; a Buffer's slice() would be a view of the same memory)
    if (!whole || buffers.has(bytes.buffer as ArrayBuffer)) bytes = new Uint8Array(bytes);
    buffers.add(bytes.buffer as ArrayBuffer);
    out[name] = bytes;
  }
  return [out, [...buffers]];
}

/**
 * Runs one request's jco operation. jco refusing the bytes is an answer; anything that
 * goes wrong outside jco (an unknown op, a reply that cannot be posted) is thrown.
 */
async function run(request: TranspileRequest): Promise<[TranspileReply, ArrayBuffer[]]> {
  const { id, op, bytes } = request;
  if (op !== 'wit' && op !== 'transpile') throw new TypeError(`unknown transpiler op ${JSON.stringify(op)}`);
  try {
    if (op === 'wit') {
      const wit = await componentWit(bytes);
      return [{ id, ok: true, op, wit }, []];
    }
    const out = await transpileBytes(bytes, TRANSPILE_OPTIONS);
    const [files, transfer] = transferable(out.files as Record<string, Uint8Array | string>);
    return [{ id, ok: true, op, files, exports: out.exports as [string, string][] }, transfer];
  } catch (e) {
    return [{ id, ok: false, message: messageOf(e), stack: e instanceof Error ? e.stack : undefined }, []];
  } finally {
    Atomics.add(jobs, 0, 1);
  }
}

port.on('message', (request: TranspileRequest) => {
  run(request)
    .then(([reply, transfer]) => port.postMessage(reply, transfer))
    .catch((e) => {
      // only a bug gets here: let the worker die of it, so the main thread sees an 'error'
      // and fails what was in flight
      setImmediate(() => {
        throw e;
      });
    });
});
