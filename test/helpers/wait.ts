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
