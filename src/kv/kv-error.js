// @ts-check
// Plain JavaScript: workers load it (Node 20 runs no TypeScript loader inside workers).

/** A refusal the guest sees as err(message): a limit, a denied write, a bad argument. */
export class KvOpError extends Error {
  /** @override */
  name = 'KvOpError';
}
