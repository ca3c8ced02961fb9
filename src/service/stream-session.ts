// One PluginService.Stream: items and batches run concurrently up to the stream's window and
// their outcomes go back in-band, as they finish or in arrival order. The window counts rows
// (an item is one; a batch as many as it carries; a batch bigger than the window runs alone).
// Back-pressure both ways: the session stops pulling messages while the window is full, and a
// row leaves the window only when its answer has left grpc-js for the connection, so results
// the client has not read count too and memory stays bounded however fast it writes.
// An engine that serves sql (StreamOptions.serve_sql) answers its guests' queries on the same
// request stream (stream-host-calls.ts): while a guest waits for an answer, the session reads
// on past a full window, holding up to another window of rows unstarted (at least
// stream.defaultWindow's), so that an answer is not stuck behind items it will not read yet.
import { create } from '@bufbuild/protobuf';
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import { setMaxListeners } from 'node:events';
import { CallOutcomeSchema, type CallOutcome } from '../../gen/plughost/v1/outcome_pb.js';
import {
  StreamBatchResultSchema,
  StreamResponseSchema,
  type HostAnswer,
  type StreamBatch,
  type StreamItem,
  type StreamRequest,
  type StreamResponse,
} from '../../gen/plughost/v1/plugin_pb.js';
import type { Identity } from '../auth/identity.js';
import { PlughostError } from '../errors.js';
import { deadlineOf, type Invoker } from './invoker.js';
import { toServiceError } from './status.js';
import { IdsInFlight, type IdClaim } from './stream-ids.js';
import { HostCalls, notServing, type HostCallObserver } from './stream-host-calls.js';
import { answerableRows, batchEnvelopeBytes, failureOf, failureOutcome, fitOutcomes, outcomeOf, rowReserveBytes } from './stream-outcomes.js';

/** The header (and trailer) that tells the client the window it was granted, in rows. */
export const WINDOW_HEADER = 'plughost-window';

export interface StreamLimits {
  defaultWindow: number;
  maxWindow: number;
  maxBatchRows: number;
  maxBatchBytes: number;
  /** grpc.maxSendMessageBytes: a batch's outcomes travel in one response. */
  maxResponseBytes: number;
}

type Work = { case: 'item'; value: StreamItem } | { case: 'batch'; value: StreamBatch };

interface Slot {
  /** Rows it holds in the window. */
  rows: number;
  /** Its ids in flight, if it claimed any. */
  claim?: IdClaim;
  response?: StreamResponse;
}

export class StreamSession {
  private module = '';
  private fn: string | undefined;
  private window: number;
  private ordered = false;
  private started = false;
  /** Rows admitted whose answer has not yet left grpc-js (the window bounds it). */
  private open = 0;
  /** Messages admitted whose answer is not yet handed to grpc-js. */
  private unanswered = 0;
  /** Read but not yet admitted: the window had no room (in arrival order). */
  private readonly waiting: Work[] = [];
  /** The rows of `waiting`. */
  private waitingRows = 0;
  /** The guests' sql waiting for the engine's answers, when the options set serve_sql. */
  private hostCalls: HostCalls | undefined;
  /** Admitted, in arrival order, for ordered streams. */
  private readonly queue: Slot[] = [];
  private readonly ids = new IdsInFlight();
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
    private readonly observeHostCall?: HostCallObserver,
  ) {
    this.window = limits.defaultWindow;
    // every call in the window listens for the stream's cancellation
    setMaxListeners(0, this.abort.signal);
    this.deadline = deadlineOf(call.getDeadline());
    call.on('data', (req: StreamRequest) => this.onRequest(req));
    call.on('end', () => {
      this.clientDone = true;
      // no answer can come any more; the items still running finish with what their guests make of that
      this.hostCalls?.engineGone();
      this.maybeFinish();
    });
    call.on('drain', () => {
      this.awaitingDrain = false;
      this.pump();
    });
    call.on('cancelled', () => this.close());
    call.on('error', () => this.close());
    call.on('close', () => this.close());
  }

  /** Rows pulled whose answer has not yet left grpc-js (the window bounds it). */
  get inFlight(): number {
    return this.open;
  }

  /** Stops pulling items, lets those admitted finish (reading the engine's answers they wait for), then ends with UNAVAILABLE. */
  shutdown(): Promise<void> {
    this.stopping = true;
    // pulls nothing more, unless a guest waits for the engine's answer
    this.pump();
    this.maybeFinish();
    return this.done;
  }

  private onRequest(req: StreamRequest): void {
    if (this.finished) return;
    // shutting down: the items admitted still finish, and their guests may be waiting on answers
    if (req.kind.case === 'hostAnswer') return this.onAnswer(req.kind.value);
    if (this.stopping) return;
    const first = !this.started;
    this.started = true;
    if (req.kind.case === 'options') {
      if (!first) return this.fail(new PlughostError('INVALID_ARGUMENT', 'StreamOptions must be the first message of a stream'));
      const o = req.kind.value;
      this.module = o.module;
      this.fn = o.function;
      this.window = Math.min(o.window || this.limits.defaultWindow, this.limits.maxWindow);
      this.ordered = o.ordered;
    }
    if (first) this.call.sendMetadata(this.windowMetadata());
    if (req.kind.case === 'options' && req.kind.value.serveSql) {
      this.hostCalls = new HostCalls((hostCall) => this.sendAside(create(StreamResponseSchema, { hostCall })), () => this.pump(), this.observeHostCall);
    }
    if (req.kind.case === 'item' || req.kind.case === 'batch') {
      this.waiting.push(req.kind);
      this.waitingRows += rowsOf(req.kind);
      this.pump();
    } else if (req.kind.case !== 'options') {
      this.fail(new PlughostError('INVALID_ARGUMENT', 'a stream message must carry options, an item, a batch or a host answer'));
    }
  }

  /** The engine's answer to a host call; one that is not taken is refused in-band and the stream goes on. */
  private onAnswer(answer: HostAnswer): void {
    if (!this.started) {
      this.started = true;
      this.call.sendMetadata(this.windowMetadata());
    }
    const refused = this.hostCalls ? this.hostCalls.answer(answer) : notServing(answer);
    if (refused) this.sendAside(create(StreamResponseSchema, { hostAnswerRefused: refused }));
  }

  /** A response that answers no item (a host call, a refused answer): written at once, in the window of no row. */
  private sendAside(response: StreamResponse): void {
    if (this.finished || this.call.cancelled) return;
    if (!this.call.write(response)) {
      this.awaitingDrain = true;
      this.call.pause();
    }
  }

  private windowMetadata(into = new Metadata()): Metadata {
    into.set(WINDOW_HEADER, String(this.window));
    return into;
  }

  /** Admits what the window has room for, in order, then pulls more only if there is room left. */
  private pump(): void {
    if (this.finished) return;
    while (!this.stopping && this.waiting.length > 0) {
      const rows = rowsOf(this.waiting[0]!);
      // a batch bigger than the window runs when nothing else is in flight
      if (this.open > 0 && this.open + rows > this.window) break;
      this.waitingRows -= rows;
      this.start(this.waiting.shift()!, rows);
    }
    const full = this.stopping || this.waiting.length > 0 || this.open >= this.window;
    // answers come behind items on the one request stream: read on while a guest waits for one,
    // holding up to a window of rows unstarted (at least the default window's, for small windows)
    const readOn = (this.hostCalls?.outstanding ?? 0) > 0 && this.waitingRows < Math.max(this.window, this.limits.defaultWindow);
    if (this.awaitingDrain || (full && !readOn)) this.call.pause();
    else this.call.resume();
  }

  private start(work: Work, rows: number): void {
    this.open += rows;
    this.unanswered++;
    const slot: Slot = { rows };
    if (this.ordered) this.queue.push(slot);
    const answer = work.case === 'item' ? this.runItem(work.value, slot) : this.runBatch(work.value, slot);
    answer.then((response) => {
      slot.response = response;
      if (!this.ordered) return this.send(slot);
      while (this.queue[0]?.response) this.send(this.queue.shift()!);
    });
  }

  /** The function for a message naming `module` and `fn`: the stream's default applies to the stream's module only. */
  private functionFor(module: string, fn: string | undefined): string | undefined {
    return fn ?? (!module || module === this.module ? this.fn : undefined);
  }

  /** The stream's deadline, or the message's own when sooner. */
  private deadlineFor(timeoutMs: number): number | undefined {
    if (!timeoutMs) return this.deadline;
    const own = Date.now() + timeoutMs;
    return this.deadline === undefined ? own : Math.min(own, this.deadline);
  }

  private moduleFor(module: string, what: string): string {
    const m = module || this.module;
    if (!m) throw new PlughostError('INVALID_ARGUMENT', `the ${what} names no module and the stream options set none`);
    return m;
  }

  private async runItem(item: StreamItem, slot: Slot): Promise<StreamResponse> {
    let moduleHash = '';
    let outcome: CallOutcome;
    try {
      slot.claim = this.ids.claimOne(item.id);
      const { result } = await this.invoker.invoke(this.identity, {
        module: this.moduleFor(item.module, 'item'),
        fn: this.functionFor(item.module, item.function),
        args: item.args,
        deadline: this.deadlineFor(item.timeoutMs),
        signal: this.abort.signal,
        requestId: `${this.requestId}/${item.id}`,
        onResolved: (hash) => (moduleHash = hash),
        sql: this.hostCalls && ((req) => this.hostCalls!.ask(item.id, req)),
      });
      outcome = create(CallOutcomeSchema, { result: result.ok ? { case: 'value', value: result.value } : { case: 'guestError', value: result.guestError } });
    } catch (e) {
      outcome = failureOutcome(e);
    }
    return create(StreamResponseSchema, { id: item.id, outcome, moduleHash });
  }

  private async runBatch(batch: StreamBatch, slot: Slot): Promise<StreamResponse> {
    let moduleHash = '';
    const result = create(StreamBatchResultSchema, { firstId: batch.firstId, ids: batch.ids });
    try {
      this.check(batch);
      slot.claim = batch.ids.length > 0 ? this.ids.claimList(batch.ids) : this.ids.claimRange(batch.firstId, batch.rows.length);
      const { outcomes } = await this.invoker.invokeBatch(this.identity, {
        module: this.moduleFor(batch.module, 'batch'),
        fn: this.functionFor(batch.module, batch.function),
        rows: batch.rows,
        deadline: this.deadlineFor(batch.timeoutMs),
        signal: this.abort.signal,
        requestId: `${this.requestId}/${batch.ids[0] ?? batch.firstId}`,
        onResolved: (hash) => (moduleHash = hash),
        // a row's host calls name the row's id
        sql: this.hostCalls && ((req) => this.hostCalls!.ask(rowId(batch, req.row ?? 0), req)),
        // the runtime refuses a row that would not fit before it commits, by the rule fitOutcomes keeps below
        resultBudget: { bytes: this.limits.maxResponseBytes - batchEnvelopeBytes(batch.ids.length), rowReserve: rowReserveBytes() },
      });
      if (outcomes.length !== batch.rows.length) throw new PlughostError('INTERNAL', `the runtime answered ${outcomes.length} outcomes for ${batch.rows.length} rows`);
      result.outcomes = outcomes.map(outcomeOf);
      fitOutcomes(result.outcomes, this.limits.maxResponseBytes - batchEnvelopeBytes(batch.ids.length));
    } catch (e) {
      result.outcomes = [];
      result.failure = failureOf(e);
    }
    return create(StreamResponseSchema, { id: batch.firstId, moduleHash, batch: result });
  }

  /** Refuses a batch that breaks a cap or whose ids do not match its rows. */
  private check(batch: StreamBatch): void {
    const n = batch.rows.length;
    const refuse = (why: string) => new PlughostError('INVALID_ARGUMENT', `batch refused, no row was run: ${why}`);
    if (n === 0) throw refuse('it carries no rows');
    if (n > this.limits.maxBatchRows) throw refuse(`${n} rows is over the server's cap of ${this.limits.maxBatchRows} (stream.maxBatchRows)`);
    const answerable = answerableRows(this.limits.maxResponseBytes, batch.ids.length);
    if (n > answerable) throw refuse(`the outcomes of ${n} rows may not fit in one response; at most ${answerable} do under grpc.maxSendMessageBytes (${this.limits.maxResponseBytes})`);
    let bytes = 0;
    for (const r of batch.rows) bytes += r.length;
    if (bytes > this.limits.maxBatchBytes) throw refuse(`its rows hold ${bytes} bytes, over the server's cap of ${this.limits.maxBatchBytes} (stream.maxBatchBytes)`);
    if (batch.ids.length > 0 && batch.ids.length !== n) throw refuse(`it has ${batch.ids.length} ids for ${n} rows (give one id per row, or none and first_id)`);
  }

  private send(slot: Slot): void {
    this.unanswered--;
    if (slot.claim) this.ids.release(slot.claim);
    if (!this.finished && !this.call.cancelled) {
      // the rows leave the window once the answer has left grpc-js, so answers the client does not read hold it full
      const more = this.call.write(slot.response!, () => this.release(slot.rows));
      if (!more) this.awaitingDrain = true;
    } else this.release(slot.rows);
    this.maybeFinish();
  }

  private release(rows: number): void {
    this.open -= rows;
    this.pump();
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.finished || this.unanswered > 0) return;
    if (this.stopping) return this.fail(new PlughostError('UNAVAILABLE', 'the server is shutting down: items and batches without a result were not run'));
    if (this.clientDone && this.waiting.length === 0) {
      this.finished = true;
      this.call.end(this.windowMetadata());
      this.resolveDone();
    }
  }

  private fail(e: PlughostError): void {
    if (this.finished) return;
    this.finished = true;
    this.hostCalls?.engineGone(`sql: the stream ended (${e.code}) before the engine answered`);
    this.abort.abort();
    this.call.pause();
    const error = toServiceError(e);
    error.metadata = this.windowMetadata(error.metadata);
    this.call.emit('error', error);
    this.resolveDone();
  }

  /** The client went away (also after it half-closed): stop what is still waiting for a controller. */
  private close(): void {
    const wasFinished = this.finished;
    this.finished = true;
    this.waiting.length = 0;
    this.waitingRows = 0;
    // before the abort, so that guests waiting on the engine are told the stream ended
    this.hostCalls?.engineGone('sql: the stream ended before the engine answered');
    if (!wasFinished) this.abort.abort();
    this.resolveDone();
  }
}

/** The id of a batch's row: `ids[row]`, or `first_id + row`. */
function rowId(batch: StreamBatch, row: number): bigint {
  return batch.ids.length > 0 ? batch.ids[row]! : batch.firstId + BigInt(row);
}

function rowsOf(work: Work): number {
  // a batch refused for having no rows still takes a place
  return work.case === 'item' ? 1 : Math.max(1, work.value.rows.length);
}
