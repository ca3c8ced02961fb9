// The host functions of wit/plugin.wit's `host` interface, and what each lowers to in a
// guest's core module (canonical ABI: every parameter flattens to i32s here, plus a pointer
// to a return area for those that return something; none returns a core value). A pushed
// component may import only these, with these core types: anything else would be accepted
// and then fail on every call (test/host-contract.test.ts checks the table against the WIT).

/** The interface a plugin imports its host functions from. */
export const HOST_INTERFACE = 'plughost:plugin/host@0.1.0';

export interface HostFunction {
  /** Its WIT type, as wit/plugin.wit writes it. */
  wit: string;
  /** i32 parameters of its core function (it has no results). */
  params: number;
}

export const HOST_FUNCTIONS: Readonly<Record<string, HostFunction>> = {
  'kv-get': { wit: 'func(key: string) -> result<option<value>, string>', params: 3 },
  'kv-set': { wit: 'func(key: string, value: value) -> result<_, string>', params: 5 },
  'kv-del': { wit: 'func(key: string) -> result<_, string>', params: 3 },
  'kv-exists': { wit: 'func(key: string) -> result<bool, string>', params: 3 },
  'kv-get-batch': { wit: 'func(keys: list<string>) -> result<list<option<value>>, string>', params: 3 },
  'kv-set-batch': { wit: 'func(entries: list<tuple<string, value>>) -> result<_, string>', params: 3 },
  'kv-del-batch': { wit: 'func(keys: list<string>) -> result<_, string>', params: 3 },
  'kv-del-range': { wit: 'func(range: key-range) -> result<u64, string>', params: 10 },
  'kv-keys': { wit: 'func(range: key-range) -> result<list<string>, string>', params: 10 },
  'kv-entries': { wit: 'func(range: key-range) -> result<list<tuple<string, value>>, string>', params: 10 },
  'kv-count': { wit: 'func(range: key-range) -> result<u64, string>', params: 10 },
  sql: { wit: 'func(query: string, vars: value) -> result<value, string>', params: 5 },
  run: { wit: 'func(module: string, function: option<string>, args: value) -> result<value, string>', params: 8 },
  log: { wit: 'func(level: log-level, message: string)', params: 3 },
};

/**
 * The exports of world `plughost:plugin/plugin` (all but `invoke` optional), with their WIT
 * types as jco's componentWit prints them (`value` is `list<u8>`).
 */
export const PLUGIN_EXPORTS: Readonly<Record<string, string>> = {
  invoke: 'func(name: option<string>, args: value) -> result<value, string>',
  'invoke-batch': 'func(name: option<string>, rows: list<value>) -> list<result<value, string>>',
  init: 'func() -> result<_, string>',
  'list-functions': 'func() -> list<option<string>>',
  'function-args': 'func(name: option<string>) -> result<list<tuple<string, string>>, string>',
  'function-returns': 'func(name: option<string>) -> result<string, string>',
  'function-writeable': 'func(name: option<string>) -> result<bool, string>',
  'function-comment': 'func(name: option<string>) -> result<option<string>, string>',
};

/** A core function type as a reader sees it: `(i32, i32) -> (i32)`. */
export function coreType(params: readonly string[], results: readonly string[]): string {
  return `(${params.join(', ')}) -> (${results.join(', ')})`;
}
