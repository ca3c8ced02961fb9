// The worker side of the host-call bridge. Host imports must answer synchronously, but
// the store behind them may be async or remote, so each import posts to the main thread
// and blocks this worker (never the main thread) on Atomics.wait until the reply lands.
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { BridgeReply, BridgeRequest } from '../protocol.js';

/** What a `plughost:plugin/host` import returns to jco: a WIT result. */
export type ImportResult = { tag: 'ok'; val: unknown } | { tag: 'err'; val: string };

/** A controller's host imports, by jco name. */
export type HostImports = Record<string, (...a: any[]) => unknown>;

/**
 * The main thread answers every host call within hostCallTimeoutMs (a late engine gets
 * err there); the worker waits this much longer, so that its own give-up is only for a
 * main thread that cannot answer at all.
 */
const ANSWER_GRACE_MS = 1000;

const FORWARDED = ['kvGet', 'kvSet', 'kvDel', 'kvExists', 'kvGetBatch', 'kvSetBatch', 'kvDelBatch', 'kvDelRange', 'kvKeys', 'kvEntries', 'kvCount', 'sql', 'run'];

export function createBridge(port: MessagePort, flagBuffer: SharedArrayBuffer, timeoutMs: number) {
  const flag = new Int32Array(flagBuffer);
  let seq = 0;

  function call(callId: number, op: string, args: unknown[]): ImportResult {
    if (callId === 0) return { tag: 'err', val: `${op} called outside of a call` };
    const mine = ++seq;
    Atomics.store(flag, 0, 0);
    port.postMessage({ seq: mine, callId, op, args } satisfies BridgeRequest);
    const deadline = Date.now() + timeoutMs + ANSWER_GRACE_MS;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || Atomics.wait(flag, 0, 0, left) === 'timed-out') {
        return { tag: 'err', val: `host call ${op} got no answer within ${timeoutMs} ms` };
      }
      // lowered before the port is read, not after: a reply posted after this read sets it
      // again, so it is never missed (the main thread posts, then sets the flag)
      Atomics.store(flag, 0, 0);
      // drain: replies to earlier calls that timed out, or to posted ones, may be queued ahead of ours
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
        const reply = m.message as BridgeReply;
        if (reply.seq !== mine) continue;
        return 'err' in reply ? { tag: 'err', val: reply.err } : { tag: 'ok', val: reply.ok };
      }
    }
  }

  return {
    /** One host call by op name, blocking this worker until the main thread answers. */
    request: call,
    /** A message the main thread needs before the call's reply, with no answer to wait for (its reply, when it comes, is skipped like a late one). */
    post(callId: number, op: string, args: unknown[]): void {
      port.postMessage({ seq: ++seq, callId, op, args } satisfies BridgeRequest);
    },
    /**
     * The `plughost:plugin/host` import object of one controller: closures over its
     * context slot, read at call time, so the context can be swapped per call.
     */
    hostImports(slot: { callId: number }): HostImports {
      const imports: HostImports = {};
      for (const op of FORWARDED) imports[op] = (...args: unknown[]) => call(slot.callId, op, args);
      return imports;
    },
  };
}
