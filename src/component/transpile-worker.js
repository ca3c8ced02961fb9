// @ts-check
// The transpiler worker: runs jco (componentWit, transpileBytes) off the thread that
// serves gRPC. Requests may overlap; each reply carries its request's id. jco refusing the
// bytes is a reply (`ok: false`), never a crash: a crash is a bug or an exhausted worker,
// and the main thread fails what was in flight and starts another worker.
import { transpileBytes } from '@bytecodealliance/jco-transpile';
import { componentWit } from '@bytecodealliance/jco-transpile/wasm-tools';
import { parentPort, workerData } from 'node:worker_threads';
import { messageOf } from '../util/message-of.js';

/**
 * @typedef {import('./transpiler.js').TranspileRequest} TranspileRequest
 * @typedef {import('./transpiler.js').TranspileReply} TranspileReply
 * @typedef {import('./transpiler.js').TranspilerInit} TranspilerInit
 */

const init = /** @type {TranspilerInit} */ (workerData);
const jobs = new Int32Array(init.jobs);
const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);

/** The options plughost has always transpiled with (`noTypescript` is not in jco's types). */
const TRANSPILE_OPTIONS = /** @type {any} */ ({ name: 'plugin', instantiation: { tag: 'sync' }, noTypescript: true });


/**
 * The file contents as Uint8Arrays that own their whole buffer, and those buffers to transfer
 * (a view into a larger or shared buffer is copied first).
 * @param {Record<string, Uint8Array | string>} files
 * @returns {[Record<string, Uint8Array>, ArrayBuffer[]]}
 */
function transferable(files) {
  /** @type {Record<string, Uint8Array>} */
  const out = {};
  /** @type {Set<ArrayBuffer>} */
  const buffers = new Set();
  for (const [name, content] of Object.entries(files)) {
    let bytes = typeof content === 'string' ? new TextEncoder().encode(content) : content;
    const whole = bytes.buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    // a copy (new Uint8Array copies; a Buffer's slice() would be a view of the same memory)
    if (!whole || buffers.has(/** @type {ArrayBuffer} */ (bytes.buffer))) bytes = new Uint8Array(bytes);
    buffers.add(/** @type {ArrayBuffer} */ (bytes.buffer));
    out[name] = bytes;
  }
  return [out, [...buffers]];
}

/**
 * Runs one request's jco operation. jco refusing the bytes is an answer; anything that
 * goes wrong outside jco (an unknown op, a reply that cannot be posted) is thrown.
 * @param {TranspileRequest} request
 * @returns {Promise<[TranspileReply, ArrayBuffer[]]>}
 */
async function run(request) {
  const { id, op, bytes } = request;
  if (op !== 'wit' && op !== 'transpile') throw new TypeError(`unknown transpiler op ${JSON.stringify(op)}`);
  try {
    if (op === 'wit') {
      const wit = await componentWit(bytes);
      return [{ id, ok: true, op, wit }, []];
    }
    const out = await transpileBytes(bytes, TRANSPILE_OPTIONS);
    const [files, transfer] = transferable(/** @type {Record<string, Uint8Array | string>} */ (out.files));
    return [{ id, ok: true, op, files, exports: /** @type {[string, string][]} */ (out.exports) }, transfer];
  } catch (e) {
    return [{ id, ok: false, message: messageOf(e), stack: e instanceof Error ? e.stack : undefined }, []];
  } finally {
    Atomics.add(jobs, 0, 1);
  }
}

port.on('message', (/** @type {TranspileRequest} */ request) => {
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
