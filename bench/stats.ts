// Small statistics shared by the benchmarks, and the checks that keep a failed call from
// being timed as a completed one.
export { median, percentile } from '../src/util/stats.js';

/** Whether a measured call answered rightly. A throw counts as a wrong answer too. */
export type Check<T> = (result: T) => boolean;

/** A timed batch of calls: µs per call (all `calls` of them, right or wrong) and how many were wrong. */
export interface Timed {
  us: number;
  calls: number;
  errors: number;
  /** What the first wrong answer was. */
  firstError?: string;
}

const hexOf = (b: Uint8Array) => `${Buffer.from(b.subarray(0, 16)).toString('hex')}${b.length > 16 ? '…' : ''} (${b.length} B)`;

/** A short description of a wrong answer or a throw, for the report. */
export function describe(answer: unknown, threw = false): string {
  if (threw) return `threw: ${answer instanceof Error ? answer.message : String(answer)}`;
  if (answer instanceof Uint8Array) return `answered ${hexOf(answer)}`;
  const a = answer as Partial<{ ok: boolean; value: unknown; guestError: string }> | undefined;
  if (a?.ok === false) return `guest error: ${a.guestError}`;
  if (a?.ok === true && a.value instanceof Uint8Array) return `answered ${hexOf(a.value)}`;
  return `answered ${String(answer)}`;
}

/** A check that throws is a failed check. */
function passes<T>(check: Check<T>, r: T): boolean {
  try {
    return check(r);
  } catch {
    return false;
  }
}

/** Runs one call and checks it: undefined when right, else what was wrong. */
export async function checked<T>(run: () => Promise<T> | T, check: Check<T>): Promise<string | undefined> {
  let r: T;
  try {
    r = await run();
  } catch (e) {
    return describe(e, true);
  }
  try {
    return check(r) ? undefined : describe(r);
  } catch (e) {
    return `check threw: ${e instanceof Error ? e.message : String(e)} on ${describe(r)}`;
  }
}

/** Mean µs per call of `n` sequential calls, each checked. */
export function perCallUs<T>(n: number, run: () => Promise<T> | T, check: Check<T>): Promise<Timed> {
  return pipelinedUs(n, 1, run, check);
}

/** Mean µs per call of `n` calls kept `depth` in flight, each checked. */
export async function pipelinedUs<T>(n: number, depth: number, run: () => Promise<T> | T, check: Check<T>): Promise<Timed> {
  let errors = 0;
  let firstError: string | undefined;
  const t = performance.now();
  let started = 0;
  await Promise.all(Array.from({ length: depth }, async () => {
    while (started++ < n) {
      let r: unknown;
      let threw = false;
      try {
        r = await run();
      } catch (e) {
        r = e;
        threw = true;
      }
      if (threw || !passes(check, r as T)) {
        errors++;
        firstError ??= describe(r, threw);
      }
    }
  }));
  return { us: ((performance.now() - t) * 1000) / n, calls: n, errors, firstError };
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;

/** What the Runtime API answers (`runtime.invoke`), as far as the checks need it. */
export type Answer = { ok: true; value: Uint8Array } | { ok: false; guestError: string };

/** A Runtime API answer of exactly `want` (the echo guest's: its args). */
export const answers = (want: Uint8Array): Check<Answer> => (r) => r.ok && sameBytes(r.value, want);
/** A Runtime API answer that is a value `ok(v)` with `test(v)`. */
export const answersValue = (test: (v: Uint8Array) => boolean = () => true): Check<Answer> => (r) => r.ok && test(r.value);
/** A Runtime API answer that is the guest's err (a call meant to fail that way). */
export const answersGuestError: Check<Answer> = (r) => !r.ok && typeof r.guestError === 'string';
/** Exactly these bytes, for calls that return them bare (jco in-thread). */
export const returns = (want: Uint8Array): Check<unknown> => (r) => r instanceof Uint8Array && sameBytes(r, want);

/** Calls and wrong answers per workload, over a whole run. */
export class ErrorTally {
  readonly rows = new Map<string, { calls: number; errors: number; firstError?: string }>();

  add(workload: string, calls: number, errors: number, firstError?: string): void {
    const row = this.rows.get(workload) ?? { calls: 0, errors: 0 };
    row.calls += calls;
    row.errors += errors;
    if (errors > 0) row.firstError ??= firstError;
    this.rows.set(workload, row);
  }

  /** Records a timed batch, and gives back its µs per call. */
  timed(workload: string, t: Timed): number {
    this.add(workload, t.calls, t.errors, t.firstError);
    return t.us;
  }

  get errors(): number {
    let n = 0;
    for (const r of this.rows.values()) n += r.errors;
    return n;
  }
}
