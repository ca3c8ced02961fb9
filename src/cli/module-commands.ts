// push, ls, describe, delete: the ModuleService from the command line.
import { SingleBar, Presets } from 'cli-progress';
import { readFileSync } from 'node:fs';
import type { ModuleInfo } from '../../gen/plughost/v1/module_pb.js';
import { PlughostError } from '../errors.js';
import type { Connection } from './client.js';

const CHUNK = 64 * 1024;
/** Below this a push is quick and a progress bar would only flicker. */
const PROGRESS_FROM = 1 << 20;

const LIMIT_KEYS = ['maxPoolSize', 'maxMemoryBytes', 'maxExecutionMs', 'kvMaxValueBytes', 'kvMaxEntries', 'kvMaxBatchItems', 'kvMaxRangeEntries'] as const;

/** `--limits '{"maxExecutionMs":500}'` or `@limits.json`, checked against the manifest's keys. */
export function parseLimits(spec: string | undefined): Record<string, number> | undefined {
  if (!spec) return undefined;
  const text = spec.startsWith('@') ? readFileSync(spec.slice(1), 'utf8') : spec;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `--limits is not JSON: ${(e as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new PlughostError('INVALID_ARGUMENT', '--limits must be a JSON object');
  for (const [k, v] of Object.entries(value)) {
    if (!(LIMIT_KEYS as readonly string[]).includes(k)) throw new PlughostError('INVALID_ARGUMENT', `--limits: unknown key ${k}; known: ${LIMIT_KEYS.join(', ')}`);
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new PlughostError('INVALID_ARGUMENT', `--limits: ${k} must be a positive whole number`);
  }
  return value as Record<string, number>;
}

export async function push(c: Connection, file: string, o: { name: string; version: string; limits?: string; expectedHash?: string; progress: boolean }) {
  const bytes = readFileSync(file);
  const limits = parseLimits(o.limits);
  const bar = o.progress && bytes.length >= PROGRESS_FROM ? new SingleBar({ format: 'push {bar} {percentage}% | {value}/{total} KiB', stream: process.stderr }, Presets.shades_classic) : undefined;
  bar?.start(Math.ceil(bytes.length / 1024), 0);
  async function* parts() {
    yield { part: { case: 'manifest' as const, value: { name: o.name, version: o.version, expectedHash: o.expectedHash ?? '', limits } } };
    for (let i = 0; i < bytes.length; i += CHUNK) {
      yield { part: { case: 'chunk' as const, value: bytes.subarray(i, i + CHUNK) } };
      bar?.update(Math.ceil(Math.min(bytes.length, i + CHUNK) / 1024));
    }
  }
  try {
    const r = await c.modules.pushModule(parts(), c.callOptions);
    return { ...r, line: `${r.created ? 'pushed' : 'already there:'} ${r.module!.name}@${r.module!.version} ${r.module!.hash} (${r.module!.sizeBytes} bytes)` };
  } finally {
    bar?.stop();
  }
}

export const moduleLine = (m: ModuleInfo) => `${`${m.name}@${m.version}`.padEnd(32)} ${m.hash}  ${String(m.sizeBytes).padStart(9)} B  ${new Date(Number(m.pushedAtUnixMs)).toISOString()}`;

export async function list(c: Connection, name?: string): Promise<string[]> {
  const r = await c.modules.listModules({ name: name ?? '' }, c.callOptions);
  return r.modules.map(moduleLine);
}

export async function describe(c: Connection, module: string): Promise<string[]> {
  const r = await c.modules.describeModule({ module }, c.callOptions);
  const m = r.module!;
  const lines = [moduleLine(m)];
  const limits = Object.entries(m.limits ?? {}).filter(([k, v]) => !k.startsWith('$') && v !== undefined);
  lines.push(`limits: ${limits.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const p = r.pool!;
  lines.push(`pool: ${p.inUse} in use, ${p.idle} idle, ${p.waiters} waiting; created ${p.created}, reused ${p.reused}, evicted ${p.evicted}; dropped trap ${p.droppedTrap} timeout ${p.droppedTimeout} memory ${p.droppedMemory} init ${p.droppedInit} other ${p.droppedOther}`);
  lines.push(r.functions.length ? 'functions:' : 'functions: (the module does not describe them)');
  for (const f of r.functions) {
    const args = f.args.map((a) => `${a.name}: ${a.type}`).join(', ');
    lines.push(`  ${f.name ?? '(default)'}(${args}) -> ${f.returns || '?'}${f.writeable ? '  [writes KV]' : ''}${f.comment ? `  # ${f.comment}` : ''}`);
  }
  return lines;
}

export async function remove(c: Connection, module: string): Promise<string> {
  const r = await c.modules.deleteModule({ module }, c.callOptions);
  return `deleted ${r.removedAliases.join(', ') || '(no alias)'}${r.moduleRemoved ? '; the module bytes are gone too' : ''}`;
}
