// A module of its own: the transpiler worker uses it, and errors.ts re-exports it for the
// main thread.

/** A readable message from anything thrown, including the non-Error values guests and jco throw. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  try {
    return JSON.stringify(e) ?? String(e);
  } catch {
    return String(e);
  }
}
