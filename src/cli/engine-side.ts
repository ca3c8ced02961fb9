// `plughost stream --serve-sql`: the request side of a stream whose client is the engine that
// answers its guests' sql. Items go out only while fewer than the window's rows are
// unanswered (an answer sent behind items the server is not reading yet would wait with them),
// answers go out as host calls come, and the side ends only once every row is answered.
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StreamRequestSchema } from '../../gen/plughost/v1/plugin_pb.js';
import { RequestQueue } from './request-queue.js';
import type { SqlReply } from './sql-answers.js';

type Item = MessageInitShape<typeof StreamRequestSchema>;

/**
 * The requests of a stream whose client answers sql: the items, let through while fewer than
 * the window's rows are unanswered, and the answers, written as host calls come. Ends the
 * client's side once the input is done and every row answered (ending it sooner would make
 * every later sql err).
 */
export class EngineSide {
  readonly requests = new RequestQueue<Item>();
  private unanswered = 0;
  private inputDone = false;
  private stopped = false;
  private failure: unknown;
  private wake: (() => void) | undefined;

  constructor(
    items: AsyncIterable<Item>,
    private window: number,
  ) {
    void this.feed(items);
  }

  /** Sends the answer to host call `hostCallId`. */
  answer(hostCallId: bigint, a: SqlReply): void {
    this.requests.send({ kind: { case: 'hostAnswer', value: { hostCallId, result: 'ok' in a ? { case: 'ok', value: a.ok } : { case: 'error', value: a.error } } } });
  }

  /** The window the server granted (its header), which bounds the rows unanswered. */
  granted(window: number): void {
    if (window > 0) this.window = window;
    this.wake?.();
  }

  answered(rows: number): void {
    this.unanswered -= rows;
    this.wake?.();
    this.maybeEnd();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Throws what reading the input threw, if it did. */
  rethrow(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async feed(items: AsyncIterable<Item>): Promise<void> {
    try {
      for await (const req of items) {
        const kind = req.kind;
        const rows = kind?.case === 'batch' ? Math.max(1, kind.value!.rows?.length ?? 0) : kind?.case === 'item' ? 1 : 0;
        // a batch bigger than the window goes when nothing else is unanswered, as the server admits it
        while (!this.stopped && rows > 0 && this.unanswered > 0 && this.unanswered + rows > (this.window || 64)) await new Promise<void>((r) => (this.wake = r));
        if (this.stopped) return;
        this.unanswered += rows;
        this.requests.send(req);
      }
    } catch (e) {
      this.failure = e;
      this.requests.end();
    }
    this.inputDone = true;
    this.maybeEnd();
  }

  private maybeEnd(): void {
    if (this.inputDone && this.unanswered <= 0) this.requests.end();
  }
}
