// Stored keys: a scope prefix, then the guest's key bytes. The prefix carries the tenant
// and module name with their lengths, so no key a guest can pass (separators, empty,
// 1024 bytes of anything) reads or writes outside its own scope.
import { KvOpError, type KvScope } from './types.js';

export interface ScopeKeys {
  /** Every stored key of the scope starts with this. */
  prefix: Buffer;
  /** Less than every key of the scope, greater than every key of other scopes below it. */
  below: Buffer;
  /** Greater than every key of the scope. */
  above: Buffer;
  /** Map key of the scope (for locks and counts). */
  id: string;
}

function lengthPrefixed(s: string, what: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length === 0 || bytes.length > 255) throw new Error(`KV scope ${what} must be 1 to 255 bytes, got ${bytes.length}`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

export function scopeKeys(scope: KvScope): ScopeKeys {
  const head = Buffer.concat([lengthPrefixed(scope.tenant, 'tenant'), lengthPrefixed(scope.module, 'module')]);
  return {
    prefix: Buffer.concat([head, Buffer.from([0x00])]),
    below: head,
    above: Buffer.concat([head, Buffer.from([0x01])]),
    id: head.toString('latin1'),
  };
}

export function encodeKey(scope: ScopeKeys, key: unknown, maxKeyBytes: number): Buffer {
  if (typeof key !== 'string') throw new KvOpError('key must be a string');
  const bytes = Buffer.from(key, 'utf8');
  if (bytes.length > maxKeyBytes) throw new KvOpError(`key of ${bytes.length} bytes exceeds the key size limit (maxKeyBytes = ${maxKeyBytes})`);
  return Buffer.concat([scope.prefix, bytes]);
}

export function decodeKey(scope: ScopeKeys, stored: Uint8Array): string {
  return Buffer.from(stored.buffer, stored.byteOffset + scope.prefix.length, stored.byteLength - scope.prefix.length).toString('utf8');
}

/** Byte-preserving string form of a stored key; sorts like the bytes. */
export const mapKey = (stored: Buffer): string => stored.toString('latin1');
export const fromMapKey = (k: string): Buffer => Buffer.from(k, 'latin1');
