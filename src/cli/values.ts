// How the CLI turns what a user types into args bytes, and result bytes into text. Args
// and values are opaque bytes to plughost; the CLI's convention is JSON text in UTF-8.
import { readFileSync } from 'node:fs';
import { PlughostError } from '../errors.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `--args`: JSON text (checked), `@file` (its bytes as they are) or `-` (standard input's bytes). */
export function readArgs(spec: string | undefined, stdin: () => Buffer = () => readFileSync(0)): Uint8Array {
  if (spec === undefined) return new Uint8Array();
  if (spec === '-') return stdin();
  if (spec.startsWith('@')) {
    try {
      return readFileSync(spec.slice(1));
    } catch (e) {
      throw new PlughostError('INVALID_ARGUMENT', `--args ${spec}: cannot read ${spec.slice(1)}: ${(e as Error).message}`);
    }
  }
  try {
    JSON.parse(spec);
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `--args is not JSON (${(e as Error).message}); pass JSON, @file for raw bytes, or - for standard input`);
  }
  return new TextEncoder().encode(spec);
}

/** A result as text when it is UTF-8, else base64 with a `base64:` prefix. */
export function showBytes(b: Uint8Array): string {
  try {
    return utf8.decode(b);
  } catch {
    return `base64:${Buffer.from(b).toString('base64')}`;
  }
}

/** A result for NDJSON: the JSON it holds, else `{ value_base64 }`-style field data. */
export function bytesField(b: Uint8Array): { value: unknown } | { value_base64: string } {
  try {
    return { value: JSON.parse(utf8.decode(b)) };
  } catch {
    return { value_base64: Buffer.from(b).toString('base64') };
  }
}
