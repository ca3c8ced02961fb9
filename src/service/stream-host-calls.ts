// The host calls of one Stream whose engine serves sql (StreamOptions.serve_sql): a guest's
// `sql` goes out as a HostCall with an id unique on the stream, and waits here until the
// engine's HostAnswer names that id. The runtime bounds the wait (hostCallTimeoutMs, the
// call's time) and aborts the request's signal when the guest stops waiting; the entry goes
// then, so nothing waits for an engine that never answers. An answer that finds no entry
// (never sent, answered already, given up on) is refused in-band and harms no item.
import { create } from '@bufbuild/protobuf';
import { HostAnswerRefusedSchema, HostCallSchema, type HostAnswer, type HostAnswerRefused, type HostCall } from '../../gen/plughost/v1/plugin_pb.js';
import type { SqlAnswer, SqlRequest } from '../runtime/context.js';

/** How a host call ended, for metrics: `refused` counts answers refused, not host calls. */
export type HostCallOutcome = 'answered' | 'error' | 'timeout' | 'engine_closed' | 'refused';

/** Told of every host call as it ends (`seconds` from sending it to its answer, for answers); must not throw. */
export type HostCallObserver = (outcome: HostCallOutcome, seconds?: number) => void;

interface Waiting {
  settle(answer: SqlAnswer, outcome: HostCallOutcome): void;
  sentAt: number;
}

/** The err a guest's `sql` returns once the engine can no longer answer. */
export const ENGINE_CLOSED = 'sql: the engine closed its side of the stream before answering';

export class HostCalls {
  private next = 1n;
  private readonly waiting = new Map<bigint, Waiting>();
  /** Set once the engine cannot answer any more: why, as the guest's err. */
  private gone: string | undefined;

  constructor(
    /** Writes a HostCall to the engine (on the response stream). */
    private readonly send: (call: HostCall) => void,
    /** Told when the number of host calls waiting changes (the session reads on while any waits). */
    private readonly changed: () => void,
    private readonly observe: HostCallObserver = () => {},
  ) {}

  /** Host calls sent and not yet answered or given up on. */
  get outstanding(): number {
    return this.waiting.size;
  }

  /** A guest's `sql` while it ran item `itemId`: asks the engine, settles with its answer or when the guest stops waiting. */
  ask(itemId: bigint, req: SqlRequest): Promise<SqlAnswer> {
    if (this.gone !== undefined) {
      this.observe('engine_closed');
      return Promise.resolve({ err: this.gone });
    }
    if (req.signal.aborted) return Promise.resolve({ err: 'sql: the call stopped waiting before the query was sent' });
    const id = this.next++;
    return new Promise<SqlAnswer>((resolve) => {
      const onAbort = () => entry.settle({ err: 'sql: the guest stopped waiting for the answer' }, 'timeout');
      const entry: Waiting = {
        sentAt: performance.now(),
        settle: (answer, outcome) => {
          if (!this.waiting.delete(id)) return;
          req.signal.removeEventListener('abort', onAbort);
          this.observe(outcome, outcome === 'answered' || outcome === 'error' ? (performance.now() - entry.sentAt) / 1000 : undefined);
          resolve(answer);
          this.changed();
        },
      };
      this.waiting.set(id, entry);
      req.signal.addEventListener('abort', onAbort, { once: true });
      this.send(create(HostCallSchema, { hostCallId: id, itemId, query: req.query, vars: req.vars, timeoutMs: Math.max(0, Math.min(req.timeoutMs, 2 ** 32 - 1)) }));
      this.changed();
    });
  }

  /** The engine's answer: settles its host call, or gives the refusal to send back (the first answer stands). */
  answer(a: HostAnswer): HostAnswerRefused | undefined {
    const entry = this.waiting.get(a.hostCallId);
    const refuse = (message: string) => {
      this.observe('refused');
      return create(HostAnswerRefusedSchema, { hostCallId: a.hostCallId, message });
    };
    if (!entry) {
      const why = a.hostCallId > 0n && a.hostCallId < this.next ? 'it was answered already, or its guest stopped waiting (timeout, or its call ended)' : 'no host call with this id was sent on this stream';
      return refuse(`answer to host call ${a.hostCallId} refused: ${why}`);
    }
    const r = a.result;
    if (r.case === 'ok') entry.settle({ ok: r.value }, 'answered');
    else if (r.case === 'error') entry.settle({ err: r.value }, 'error');
    else return refuse(`answer to host call ${a.hostCallId} refused: it has neither ok nor error (the host call still waits)`);
    return undefined;
  }

  /** The engine can no longer answer: every host call waiting, and every later one, gets err `why`. */
  engineGone(why = ENGINE_CLOSED): void {
    this.gone ??= why;
    for (const entry of [...this.waiting.values()]) entry.settle({ err: this.gone }, 'engine_closed');
  }
}

/** What a HostAnswer sent on a stream that does not serve sql gets back. */
export function notServing(a: HostAnswer): HostAnswerRefused {
  return create(HostAnswerRefusedSchema, {
    hostCallId: a.hostCallId,
    message: `answer to host call ${a.hostCallId} refused: this stream does not serve sql (its first message must be options with serve_sql set)`,
  });
}
