// @ts-check
// A runtime worker: hosts controllers (jco instances) of many modules and runs its
// requests one at a time, in the order the main thread sent them. Guest code runs only
// here, never on the thread that serves gRPC: a guest that spins is stopped by
// terminating this worker.
import { parentPort, workerData } from 'node:worker_threads';
import { createBridge } from './bridge.js';
import { classifyFailure } from './classify.js';

/**
 * @typedef {(getCoreModule: (n: string) => WebAssembly.Module, imports: object,
 *   instantiateCore: (m: WebAssembly.Module, i: WebAssembly.Imports) => WebAssembly.Instance)
 *   => Record<string, (...a: unknown[]) => unknown>} Instantiate
 * @typedef {{ glue: string, coreModules: Record<string, WebAssembly.Module>, maxMemoryBytes: number, instantiate?: Instantiate }} LoadedModule
 * @typedef {{ module: LoadedModule, exports: Record<string, (...a: unknown[]) => unknown>, memory?: WebAssembly.Memory, slot: { callId: number } }} LiveController
 * @typedef {import('../protocol.js').ToWorker} ToWorker
 * @typedef {import('../protocol.js').FromWorker} FromWorker
 */

const init = /** @type {import('../protocol.js').WorkerInit} */ (workerData);
const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
const bridge = createBridge(init.bridgePort, init.bridgeFlag, init.hostCallTimeoutMs);
/** @type {Map<number, LoadedModule>} */
const modules = new Map();
/** @type {Map<number, LiveController>} */
const controllers = new Map();

/** @param {FromWorker} m */
const post = (m) => port.postMessage(m);

/** @param {LiveController | undefined} c */
const memoryBytes = (c) => c?.memory?.buffer.byteLength ?? 0;

/**
 * @param {number} moduleId
 * @returns {LiveController}
 */
function instantiate(moduleId) {
  const module = modules.get(moduleId);
  if (!module) throw new Error(`module ${moduleId} is not loaded in this worker`);
  // new Function, not import(): a module evaluated this way can be garbage-collected
  module.instantiate ??= /** @type {{ instantiate: Instantiate }} */ (new Function(module.glue)()).instantiate;
  const slot = { callId: 0 };
  /** @type {WebAssembly.Memory | undefined} */
  let memory;
  const exports = module.instantiate(
    (name) => {
      const m = module.coreModules[name];
      if (!m) throw new Error(`no core module ${name}`);
      return m;
    },
    { 'plughost:plugin/host': bridge.hostImports(slot) },
    (m, imports) => {
      const instance = new WebAssembly.Instance(m, imports);
      if (instance.exports.memory instanceof WebAssembly.Memory) memory ??= instance.exports.memory;
      return instance;
    },
  );
  return { module, exports, memory, slot };
}

/** @param {ToWorker} msg */
function handle(msg) {
  switch (msg.t) {
    case 'batch':
      // each reply goes out as soon as its request is done, so the main thread's timer for
      // the next one starts on time
      for (const m of msg.items) handle(m);
      return;
    case 'load':
      modules.set(msg.moduleId, { glue: msg.glue, coreModules: msg.coreModules, maxMemoryBytes: msg.maxMemoryBytes });
      return;
    case 'unload':
      modules.delete(msg.moduleId);
      return;
    case 'drop':
      controllers.delete(msg.controllerId);
      return;
    case 'create': {
      const t0 = performance.now();
      /** @type {LiveController | undefined} */
      let c;
      try {
        c = instantiate(msg.moduleId);
        if (msg.runInit) c.exports.init?.();
        controllers.set(msg.controllerId, c);
        post({ t: 'done', seq: msg.seq, value: undefined, memoryBytes: memoryBytes(c), ms: performance.now() - t0 });
      } catch (e) {
        const f = classifyFailure(e, c?.memory, modules.get(msg.moduleId)?.maxMemoryBytes ?? 0);
        // an init that returned err(...) is the guest's refusal; anything else while starting is a trap
        post({ t: 'failed', seq: msg.seq, kind: f.kind === 'guest' ? 'init' : f.kind, message: f.message, memoryBytes: memoryBytes(c) });
      }
      return;
    }
    case 'call': {
      const c = controllers.get(msg.controllerId);
      if (!c) {
        post({ t: 'failed', seq: msg.seq, kind: 'trap', message: `controller ${msg.controllerId} does not exist in this worker`, memoryBytes: 0 });
        return;
      }
      const t0 = performance.now();
      c.slot.callId = msg.callId;
      try {
        const fn = c.exports[msg.fn];
        if (!fn) throw new Error(`the module does not export ${msg.fn}`);
        const value = fn(...msg.args);
        post({ t: 'done', seq: msg.seq, value, memoryBytes: memoryBytes(c), ms: performance.now() - t0 });
      } catch (e) {
        const f = classifyFailure(e, c.memory, c.module.maxMemoryBytes);
        // the controller's state is in doubt after anything but the guest's own err: forget it
        if (f.kind !== 'guest') controllers.delete(msg.controllerId);
        post({ t: 'failed', seq: msg.seq, kind: f.kind, message: f.message, memoryBytes: memoryBytes(c) });
      } finally {
        c.slot.callId = 0;
      }
      return;
    }
  }
}

port.on('message', handle);
post({ t: 'ready' });
