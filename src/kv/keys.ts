// Stored keys: a scope prefix, then the guest's key bytes. The prefix carries the tenant
// and module name with their lengths, so no key a guest can pass (separators, empty,
// 1024 bytes of anything) reads or writes outside its own scope. The workers read LMDB
// with these keys too.
import { KvOpError } from './kv-error.js';

export interface ScopeKeys {
  /** Every stored key of the scope starts with this. */
  prefix: Buffer;
  /** Less than every key of the scope, greater than every key of other scopes below it; also the scope's key in the counts table. */
  below: Buffer;
  /** Greater than every key of the scope. */
  above: Buffer;
  /** Map key of the scope (its lock, its pending commits): scopeId. */
  id: string;
}

function lengthPrefixed(s: string, what: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length === 0 || bytes.length > 255) throw new Error(`KV scope ${what} must be 1 to 255 bytes, got ${bytes.length}`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/** The scope's map key, as scopeKeys(scope).id (unambiguous: lengths come first). */
export function scopeId(scope: { tenant: string; module: string }): string {
  return Buffer.concat([lengthPrefixed(scope.tenant, 'tenant'), lengthPrefixed(scope.module, 'module')]).toString('latin1');
}

export function scopeKeys(scope: { tenant: string; module: string }): ScopeKeys {
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
