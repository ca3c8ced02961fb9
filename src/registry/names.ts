// Module names, versions and the references callers use for them: `sha256:<hex>`,
// `name@version`, or `name` (its highest version).
import semver from 'semver';
import { PlughostError } from '../errors.js';

const NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const HASH = /^sha256:[0-9a-f]{64}$/;

export type ModuleRef = { kind: 'hash'; hash: string } | { kind: 'alias'; name: string; version?: string };

export function checkName(name: string): string {
  if (!NAME.test(name)) {
    throw new PlughostError('INVALID_ARGUMENT', `module name ${JSON.stringify(name)} is invalid: use 1-64 lower-case letters, digits, '-' and '_', starting with a letter or digit`);
  }
  return name;
}

export function checkVersion(version: string): string {
  const v = semver.valid(version);
  if (!v || v !== version) throw new PlughostError('INVALID_ARGUMENT', `module version ${JSON.stringify(version)} is not a semantic version such as 1.2.0`);
  return v;
}

export function parseRef(ref: string): ModuleRef {
  if (ref === '') throw new PlughostError('INVALID_ARGUMENT', 'no module named: pass a sha256:<hex> hash, name@version or name');
  if (ref.startsWith('sha256:')) {
    if (!HASH.test(ref)) throw new PlughostError('INVALID_ARGUMENT', `${JSON.stringify(ref)} is not a sha256:<64 hex digits> hash`);
    return { kind: 'hash', hash: ref };
  }
  const at = ref.indexOf('@');
  if (at < 0) return { kind: 'alias', name: checkName(ref) };
  return { kind: 'alias', name: checkName(ref.slice(0, at)), version: checkVersion(ref.slice(at + 1)) };
}

export const aliasOf = (name: string, version: string) => `${name}@${version}`;

/** Newest first. */
export const byVersionDesc = (a: string, b: string) => semver.rcompare(a, b);
