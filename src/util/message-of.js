// @ts-check
// Plain JavaScript: worker threads use it too (Node 20 runs no TypeScript loader in workers).

/**
 * A readable message from anything thrown, including the non-Error values guests and jco throw.
 * @param {unknown} e
 * @returns {string}
 */
export function messageOf(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  try {
    return JSON.stringify(e) ?? String(e);
  } catch {
    return String(e);
  }
}
