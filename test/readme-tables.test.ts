// The README's configuration and error tables against the code they describe: every key the
// config schema accepts has a row, and every error code has a row with the gRPC status and
// Stream outcome that src/service/status.ts gives it.
import test from 'ava';
import { status } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FailureKind } from '../gen/plughost/v1/outcome_pb.js';
import { ERROR_CODES } from '../src/errors.js';
import { configSchema } from '../src/service/config.js';
import { ERROR_TABLE } from '../src/service/status.js';

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

/** The rows of the first table after `heading`, as cells. */
function tableAfter(heading: string): string[][] {
  const from = README.indexOf(heading);
  if (from < 0) throw new Error(`the README has no "${heading}"`);
  const lines = README.slice(from).split('\n');
  const start = lines.findIndex((l) => l.startsWith('|'));
  const rows: string[][] = [];
  for (const l of lines.slice(start + 2)) {
    if (!l.startsWith('|')) break;
    rows.push(l.slice(1, -1).split(' | ').map((c) => c.trim()));
  }
  return rows;
}

/** Every leaf key path of the schema's input, e.g. `limits.kv.maxKeyBytes`. */
function configKeys(): string[] {
  type Json = { type?: string; properties?: Record<string, Json> };
  const keys: string[] = [];
  const walk = (s: Json, path: string[]) => {
    if (s.type === 'object' && s.properties && Object.keys(s.properties).length > 0) {
      for (const [k, v] of Object.entries(s.properties)) walk(v, [...path, k]);
    } else keys.push(path.join('.'));
  };
  walk(z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Json, []);
  return keys;
}

test('README configuration table: a row for every key the configuration accepts, and no other', (t) => {
  const documented = tableAfter('## Configuration').flatMap((row) => [...row[0]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!));
  const keys = configKeys();
  t.true(keys.length > 20, `${keys.length} keys read from the schema`);
  t.deepEqual(keys.filter((k) => !documented.includes(k)), [], 'keys missing from the README');
  t.deepEqual(documented.filter((k) => !keys.includes(k)), [], 'README rows for keys the schema does not have');
});

test('README error table: every code, with the gRPC status and Stream outcome the edge gives it', (t) => {
  const rows = new Map(tableAfter('## Errors').map((r) => [r[0]!.replaceAll('`', ''), r]));
  for (const code of ERROR_CODES) {
    const row = rows.get(code);
    if (!row) {
      t.fail(`${code} has no row`);
      continue;
    }
    t.is(row[2], status[ERROR_TABLE[code].grpc], `${code}: gRPC status`);
    const outcome = row[3]!.replaceAll('`', '');
    if (outcome.startsWith('FAILURE_KIND_')) t.is(outcome, `FAILURE_KIND_${FailureKind[ERROR_TABLE[code].stream]}`, `${code}: Stream outcome`);
  }
});
