// A promise raced against a timer (and an abort signal), with nothing left behind: the timer
// is cleared and the listener removed however it ends.

export interface WithinOptions<T> {
  /** Aborting it stops the wait with `cancelled()`. */
  signal?: AbortSignal | undefined;
  cancelled?: () => Error;
  /** Given the value should it come after the wait stopped (a lock granted after all, to release). */
  late?: (v: T) => void;
}

/** `p`, or `timedOut()` once `ms` have passed, or `cancelled()` when the signal aborts. */
export async function within<T>(p: Promise<T>, ms: number, timedOut: () => Error, options: WithinOptions<T> = {}): Promise<T> {
  const { signal, cancelled, late } = options;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  let gaveUp = false;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        const stop = (e: () => Error) => {
          gaveUp = true;
          reject(e());
        };
        timer = setTimeout(() => stop(timedOut), Math.max(0, ms));
        if (signal && cancelled) {
          onAbort = () => stop(cancelled);
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        }
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal!.removeEventListener('abort', onAbort);
    if (gaveUp && late) p.then(late, () => {});
  }
}
