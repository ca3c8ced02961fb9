// A client stream's requests written as the client goes (items as they are read, answers as
// host calls come), ended by the writer: the async iterable a connect client stream reads.
export class RequestQueue<T> implements AsyncIterable<T> {
  private readonly queue: T[] = [];
  private wake: (() => void) | undefined;
  private ended = false;

  send(...reqs: T[]): void {
    this.queue.push(...reqs);
    this.wake?.();
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      while (this.queue.length > 0) yield this.queue.shift()!;
      if (this.ended) return;
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}
