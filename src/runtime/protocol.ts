// Messages between the main thread and a runtime worker. Structured-clone friendly only.
import type { MessagePort } from 'node:worker_threads';
import type { PluginExport } from '../component/load.js';

export type KvAccess = 'none' | 'read' | 'write';

export interface WorkerInit {
  /** Port the worker's host imports call the main thread on (synchronously, see bridge.ts). */
  bridgePort: MessagePort;
  /** flag[0] is set to 1 and notified by the main thread when a bridge reply is posted. */
  bridgeFlag: SharedArrayBuffer;
  /** How long one host call may block the guest before it gets err(...). */
  hostCallTimeoutMs: number;
}

export type ToWorker =
  | { t: 'load'; moduleId: number; glue: string; coreModules: Record<string, WebAssembly.Module>; maxMemoryBytes: number }
  | { t: 'unload'; moduleId: number }
  | { t: 'create'; seq: number; controllerId: number; moduleId: number; runInit: boolean }
  | { t: 'call'; seq: number; controllerId: number; fn: PluginExport; args: unknown[]; callId: number }
  | { t: 'drop'; controllerId: number }
  | { t: 'batch'; items: ToWorker[] };

/** How a request ended in the worker. */
export type FailureKind = 'guest' | 'trap' | 'memory' | 'init';

export type FromWorker =
  | { t: 'ready' }
  | { t: 'done'; seq: number; value: unknown; memoryBytes: number; ms: number }
  | { t: 'failed'; seq: number; kind: FailureKind; message: string; memoryBytes: number };

/** Worker -> main over the bridge port. `seq` present = the worker is blocked waiting for the reply. */
export type BridgeRequest =
  | { seq: number; callId: number; op: string; args: unknown[] }
  | { log: true; callId: number; level: string; message: string };

/** main -> worker: `{ ok }` becomes the import's value, `{ err }` the guest-visible err(string). */
export type BridgeReply = { seq: number; ok: unknown } | { seq: number; err: string };
