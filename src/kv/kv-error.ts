// The KV refusal, in a module of its own: the runtime workers and the main thread's
// store both throw it.

/** A refusal the guest sees as err(message): a limit, a denied write, a bad argument. */
export class KvOpError extends Error {
  override name = 'KvOpError';
}
