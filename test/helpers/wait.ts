// Waiting in tests for something another thread, process or connection does: poll, bounded.
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `done` every `everyMs` until it holds or `timeoutMs` has passed; says whether it held. */
export async function waitFor(done: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 20): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await done()) return true;
    if (Date.now() >= until) return false;
    await sleep(everyMs);
  }
}

/** Reads `value` every `everyMs` until two reads agree or `timeoutMs` has passed: the value it settled at, if it did. */
export async function settled(value: () => number, timeoutMs = 5000, everyMs = 500): Promise<{ value: number; steady: boolean }> {
  let before = value();
  for (const until = Date.now() + timeoutMs; Date.now() < until; ) {
    await sleep(everyMs);
    const now = value();
    if (now === before) return { value: now, steady: true };
    before = now;
  }
  return { value: before, steady: false };
}
