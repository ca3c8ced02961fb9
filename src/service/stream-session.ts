// One PluginService.Stream: items run concurrently up to the stream's window and their
// outcomes go back in-band, as they finish or in arrival order. Back-pressure both ways:
// the session stops pulling items while the window is full, and a full window includes
// results the client has not read yet, so memory stays bounded however fast it writes.
import { create } from '@bufbuild/protobuf';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { setMaxListeners } from 'node:events';
import { CallOutcomeSchema, CallFailureSchema, type CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';
import { StreamResponseSchema, type StreamItem, type StreamRequest, type StreamResponse } from '../../gen/plughost/v1/plugin_pb.js';
import type { Identity } from '../auth/identity.js';
import { PlughostError } from '../errors.js';
import { deadlineOf, type Invoker } from './invoker.js';
import { failureKindOf, toServiceError } from './status.js';

interface Slot {
  id: bigint;
  outcome?: CallOutcome;
}

export interface StreamLimits {
  defaultWindow: number;
  maxWindow: number;
}

export class StreamSession {
  private module = '';
  private fn: string | undefined;
  private window: number;
  private ordered = false;
  private started = false;
  /** Items pulled whose result is not yet handed to grpc-js. */
  private open = 0;
  /** Arrival order, for ordered streams. */
  private readonly queue: Slot[] = [];
  private clientDone = false;
  private stopping = false;
  private finished = false;
  private awaitingDrain = false;
  private readonly abort = new AbortController();
  private readonly deadline: number | undefined;
  private resolveDone!: () => void;
  /** Settles when the stream has ended, however it ended. */
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  constructor(
    private readonly call: ServerDuplexStream<StreamRequest, StreamResponse>,
    private readonly identity: Identity,
    private readonly invoker: Invoker,
    private readonly limits: StreamLimits,
    private readonly requestId: string,
  ) {
    this.window = limits.defaultWindow;
    // every item in the window listens for the stream's cancellation
    setMaxListeners(0, this.abort.signal);
    this.deadline = deadlineOf(call.getDeadline());
    call.on('data', (req: StreamRequest) => this.onRequest(req));
    call.on('end', () => {
      this.clientDone = true;
      this.maybeFinish();
    });
    call.on('drain', () => {
      this.awaitingDrain = false;
      this.maybeResume();
    });
    call.on('cancelled', () => this.close());
    call.on('error', () => this.close());
    call.on('close', () => this.close());
  }

  /** Items pulled whose result is not yet handed to grpc-js (the window bounds it). */
  get inFlight(): number {
    return this.open;
  }

  /** Stops pulling items, lets those in flight finish, then ends with UNAVAILABLE. */
  shutdown(): Promise<void> {
    this.stopping = true;
    this.call.pause();
    this.maybeFinish();
    return this.done;
  }

  private onRequest(req: StreamRequest): void {
    if (this.finished || this.stopping) return;
    if (req.kind.case === 'options') {
      if (this.started) return this.fail(new PlughostError('INVALID_ARGUMENT', 'StreamOptions must be the first message of a stream'));
      const o = req.kind.value;
      if (o.window > this.limits.maxWindow) {
        return this.fail(new PlughostError('INVALID_ARGUMENT', `window ${o.window} is over the server's cap of ${this.limits.maxWindow} (stream.maxWindow)`));
      }
      this.module = o.module;
      this.fn = o.function;
      this.window = o.window || this.limits.defaultWindow;
      this.ordered = o.ordered;
      this.started = true;
      return;
    }
    this.started = true;
    if (req.kind.case !== 'item') return this.fail(new PlughostError('INVALID_ARGUMENT', 'a stream message must carry options or an item'));
    this.start(req.kind.value);
  }

  private start(item: StreamItem): void {
    this.open++;
    if (this.open >= this.window) this.call.pause();
    const slot: Slot = { id: item.id };
    if (this.ordered) this.queue.push(slot);
    this.run(item).then((outcome) => {
      slot.outcome = outcome;
      if (!this.ordered) return this.send(slot);
      while (this.queue[0]?.outcome) this.send(this.queue.shift()!);
    });
  }

  private async run(item: StreamItem): Promise<CallOutcome> {
    try {
      const module = item.module || this.module;
      if (!module) throw new PlughostError('INVALID_ARGUMENT', 'the item names no module and the stream options set none');
      const { result } = await this.invoker.invoke(this.identity, {
        module,
        fn: item.module ? item.function : (item.function ?? this.fn),
        args: item.args,
        deadline: this.deadline,
        signal: this.abort.signal,
        requestId: `${this.requestId}/${item.id}`,
      });
      return create(CallOutcomeSchema, { result: result.ok ? { case: 'value', value: result.value } : { case: 'guestError', value: result.guestError } });
    } catch (e) {
      const { kind, message } = failureKindOf(e);
      return create(CallOutcomeSchema, { result: { case: 'failure', value: create(CallFailureSchema, { kind, message }) } });
    }
  }

  private send(slot: Slot): void {
    this.open--;
    if (!this.finished && !this.call.cancelled) {
      if (!this.call.write(create(StreamResponseSchema, { id: slot.id, outcome: slot.outcome }))) this.awaitingDrain = true;
    }
    this.maybeResume();
    this.maybeFinish();
  }

  private maybeResume(): void {
    if (!this.finished && !this.stopping && !this.awaitingDrain && this.open < this.window) this.call.resume();
  }

  private maybeFinish(): void {
    if (this.finished || this.open > 0) return;
    if (this.stopping) return this.fail(new PlughostError('UNAVAILABLE', 'the server is shutting down: items without a result were not run'));
    if (this.clientDone) {
      this.finished = true;
      this.call.end();
      this.resolveDone();
    }
  }

  private fail(e: PlughostError): void {
    if (this.finished) return;
    this.finished = true;
    this.abort.abort();
    this.call.pause();
    this.call.emit('error', toServiceError(e));
    this.resolveDone();
  }

  /** The client went away: stop what is still waiting for a controller. */
  private close(): void {
    if (!this.finished && !this.clientDone) this.abort.abort();
    this.finished = true;
    this.resolveDone();
  }
}
