// What the main thread and a runtime worker exchange besides the ring records of
// shared/wire.ts: the worker's start-up data and the control messages (structured clone).
import type { MessagePort } from 'node:worker_threads';
import type { KvLimits } from '../kv/types.js';
import type { CallRecord } from './shared/wire.js';

export interface WorkerInit {
  /** Ring of requests, main -> worker (shared/ring.ts). */
  requests: SharedArrayBuffer;
  /** Ring of replies, worker -> main. */
  replies: SharedArrayBuffer;
  /** Int32 [0]: seq of the call running now (0: none); Float64 [1]: when it started (epoch ms). */
  status: SharedArrayBuffer;
  /** Control messages and oversized records, both ways, read with receiveMessageOnPort when a ring record announces them. */
  controlPort: MessagePort;
  /** Port the worker's host imports call the main thread on (synchronously, see worker/bridge.ts). */
  bridgePort: MessagePort;
  /** flag[0] is set to 1 and notified by the main thread when a bridge reply is posted. */
  bridgeFlag: SharedArrayBuffer;
  /** How long one host call may block the guest before it gets err(...). */
  hostCallTimeoutMs: number;
  /** Longest the worker spins for the next call before it sleeps (µs; 0: never spins). */
  spinUs: number;
  /** The embedded store the worker reads directly, if any. */
  kv?: { path: string; commitMode: 'grouped' | 'per-call' } | undefined;
  /** Float64 per KV_OPS entry: KV operations the worker's guests made (read by metrics). */
  kvOps: SharedArrayBuffer;
  /** Float64 [0]: the worker's heap in use when it started; [1]: after its last call (worker/guards.ts). */
  heap: SharedArrayBuffer;
}

export type ControlMessage =
  | { t: 'load'; moduleId: number; glue: string; coreModules: Record<string, WebAssembly.Module>; maxMemoryBytes: number; kvLimits: KvLimits; directInvoke: boolean; callsRun: boolean }
  | { t: 'unload'; moduleId: number }
  /** A call too big for the request ring. */
  | { t: 'call'; call: CallRecord }
  | { t: 'stop' };

/** Worker -> main over the bridge port; the worker is blocked waiting for the reply. */
export type BridgeRequest = { seq: number; callId: number; op: string; args: unknown[] };

/** main -> worker: `{ ok }` becomes the import's value, `{ err }` the guest-visible err(string). */
export type BridgeReply = { seq: number; ok: unknown } | { seq: number; err: string };
