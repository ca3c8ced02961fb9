// @ts-check
// Stored keys: a scope prefix, then the guest's key bytes. The prefix carries the tenant
// and module name with their lengths, so no key a guest can pass (separators, empty,
// 1024 bytes of anything) reads or writes outside its own scope. Plain JavaScript: the
// workers read LMDB with these keys too.
import { KvOpError } from './kv-error.js';

/**
 * @typedef {object} ScopeKeys
 * @property {Buffer} prefix Every stored key of the scope starts with this.
 * @property {Buffer} below Less than every key of the scope, greater than every key of other scopes below it; also the scope's key in the counts table.
 * @property {Buffer} above Greater than every key of the scope.
 * @property {string} id Map key of the scope (its lock, its pending commits): scopeId.
 */

/**
 * @param {string} s
 * @param {string} what
 */
function lengthPrefixed(s, what) {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length === 0 || bytes.length > 255) throw new Error(`KV scope ${what} must be 1 to 255 bytes, got ${bytes.length}`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/**
 * The scope's map key, as scopeKeys(scope).id (unambiguous: lengths come first).
 * @param {{ tenant: string, module: string }} scope
 */
export function scopeId(scope) {
  return Buffer.concat([lengthPrefixed(scope.tenant, 'tenant'), lengthPrefixed(scope.module, 'module')]).toString('latin1');
}

/**
 * @param {{ tenant: string, module: string }} scope
 * @returns {ScopeKeys}
 */
export function scopeKeys(scope) {
  const head = Buffer.concat([lengthPrefixed(scope.tenant, 'tenant'), lengthPrefixed(scope.module, 'module')]);
  return {
    prefix: Buffer.concat([head, Buffer.from([0x00])]),
    below: head,
    above: Buffer.concat([head, Buffer.from([0x01])]),
    id: head.toString('latin1'),
  };
}

/**
 * @param {ScopeKeys} scope
 * @param {unknown} key
 * @param {number} maxKeyBytes
 */
export function encodeKey(scope, key, maxKeyBytes) {
  if (typeof key !== 'string') throw new KvOpError('key must be a string');
  const bytes = Buffer.from(key, 'utf8');
  if (bytes.length > maxKeyBytes) throw new KvOpError(`key of ${bytes.length} bytes exceeds the key size limit (maxKeyBytes = ${maxKeyBytes})`);
  return Buffer.concat([scope.prefix, bytes]);
}

/**
 * @param {ScopeKeys} scope
 * @param {Uint8Array} stored
 */
export function decodeKey(scope, stored) {
  return Buffer.from(stored.buffer, stored.byteOffset + scope.prefix.length, stored.byteLength - scope.prefix.length).toString('utf8');
}

/** Byte-preserving string form of a stored key; sorts like the bytes. @param {Buffer} stored */
export const mapKey = (stored) => stored.toString('latin1');
/** @param {string} k */
export const fromMapKey = (k) => Buffer.from(k, 'latin1');
