// Where the configuration comes from, for the `plughost serve` command: one file (YAML or
// JSON), then environment overrides, then command-line flags, merged and validated once by
// parseConfig. An environment override is PLUGHOST_ followed by the key's path in
// SCREAMING_SNAKE_CASE with `__` between levels: PLUGHOST_LIMITS__MAX_EXECUTION_MS=500 sets
// limits.maxExecutionMs. Values are JSON where they parse as JSON (numbers, booleans),
// strings otherwise.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { PlughostError, messageOf } from '../errors.js';
import { configSchema, parseConfig, type PlughostConfig } from './config.js';

type Tree = Record<string, unknown>;

export const ENV_PREFIX = 'PLUGHOST_';

function readFile(path: string): Tree {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `cannot read the configuration file ${path}: ${messageOf(e)}`);
  }
  let value: unknown;
  try {
    // YAML is a superset of JSON: one parser reads both
    value = parseYaml(text);
  } catch (e) {
    throw new PlughostError('INVALID_ARGUMENT', `the configuration file ${path} is not valid YAML or JSON: ${messageOf(e)}`);
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new PlughostError('INVALID_ARGUMENT', `the configuration file ${path} must hold a mapping of keys`);
  return value as Tree;
}

const camel = (snake: string) => snake.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The overrides in `env`: only variables whose first segment names a top-level key (so PLUGHOST_TOKEN, a client's, is not one). */
export function envOverrides(env: NodeJS.ProcessEnv): { tree: Tree; sources: Map<string, string> } {
  const topLevel = new Set(Object.keys(configSchema.shape));
  const tree: Tree = {};
  const sources = new Map<string, string>();
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || raw === undefined) continue;
    const path = name.slice(ENV_PREFIX.length).split('__').map(camel);
    if (!topLevel.has(path[0]!)) continue;
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // a plain string
    }
    let node = tree;
    for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Tree;
    node[path.at(-1)!] = value;
    sources.set(path.join('.'), name);
  }
  return { tree, sources };
}

function merge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? merge(b as Tree, v as Tree) : v;
  }
  return out;
}

/** file < environment < flags; the error names each bad key and, for an override, its variable. */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv; flags?: Tree }): PlughostConfig {
  const fromFile = options.file ? readFile(options.file) : {};
  const { tree: fromEnv, sources } = envOverrides(options.env ?? {});
  const merged = merge(merge(fromFile, fromEnv), options.flags ?? {});
  try {
    return parseConfig(merged);
  } catch (e) {
    if (!(e instanceof PlughostError) || sources.size === 0) throw e;
    // name the environment variable beside a key it set
    let message = e.message;
    for (const [key, variable] of sources) message = message.replaceAll(`${key}:`, `${key} (from ${variable}):`);
    throw new PlughostError(e.code, message);
  }
}
