// Component bytes -> everything a worker needs to instantiate controllers: the jco glue
// (patched and ready for `new Function`) and the compiled, memory-capped core modules.
// Validation happens here, once; a refused module leaves nothing behind. jco's work (WIT
// extraction, transpilation) runs in the transpiler worker (./transpiler.ts), never on
// the calling thread; compiling the core modules (async in V8) and the checks stay here.
import { createHash } from 'node:crypto';
import { PlughostError, messageOf } from '../errors.js';
import { JcoError, transpiler } from './transpiler.js';
import { WASM_PAGE, binaryKind, capCoreMemory, funcImports } from './wasm-binary.js';
import { importedFunctions } from './component-types.js';
import { HOST_FUNCTIONS, HOST_INTERFACE, PLUGIN_EXPORTS, coreType, writtenOut } from './host-contract.js';
import { LIFT_GUARDS } from './lift-budget.js';

export { closeTranspiler, transpilerStats } from './transpiler.js';

export { HOST_INTERFACE };
const ALLOWED_IMPORTS = new Set([HOST_INTERFACE, 'plughost:plugin/types@0.1.0']);

/** The optional exports a plugin may have, by their jco (camelCase) names. */
export const OPTIONAL_EXPORTS = ['invokeBatch', 'init', 'listFunctions', 'functionArgs', 'functionReturns', 'functionWriteable', 'functionComment'] as const;
export type PluginExport = 'invoke' | (typeof OPTIONAL_EXPORTS)[number];

export interface CompiledComponent {
  /** `sha256:<hex>` of the component bytes. */
  readonly hash: string;
  readonly sizeBytes: number;
  /** The glue's source, rewritten to be evaluated with `new Function` (returns `{ instantiate }`). */
  readonly glue: string;
  /** Core modules by the file name the glue asks for, compiled once, memory-capped. */
  readonly coreModules: Record<string, WebAssembly.Module>;
  /** Which plugin exports the component has. */
  readonly exports: ReadonlySet<PluginExport>;
  /** The `host` functions the component imports, by their WIT names (`kv-get`, `log`...). */
  readonly hostImports: ReadonlySet<string>;
  /**
   * One core module that imports nothing and whose `invoke` the glue lifts straight from
   * its export of that name: a worker may call it without jco's wrapper (direct-invoke.ts).
   */
  readonly directInvoke: boolean;
  readonly maxMemoryBytes: number;
  readonly timings: { transpileMs: number; compileMs: number };
}

export function hashOf(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

const INVOKE_SIGNATURE = /^\s*export invoke: func\(name: option<string>, args: (?:value|list<u8>)\) -> result<(?:value|list<u8>), string>;$/m;

/** Refuses components whose world is not (a subset of) `plughost:plugin/plugin`; returns what it imports. */
async function checkWorld(bytes: Uint8Array): Promise<string[]> {
  let wit: string;
  try {
    wit = await transpiler().wit(bytes);
  } catch (e) {
    throw refused(e);
  }
  // every one, so a wrong version of host is named as such (not only the types it brings along)
  const imports = [...wit.matchAll(/^\s*import ([^;]+);$/gm)].map((m) => m[1]!.trim());
  const foreign = imports.filter((name) => !ALLOWED_IMPORTS.has(name));
  if (foreign.length > 0) {
    throw new PlughostError('INVALID_MODULE', `component imports ${foreign.map((n) => `"${n}"`).join(', ')}; plugins may import only ${HOST_INTERFACE} (and its ${[...ALLOWED_IMPORTS].filter((n) => n !== HOST_INTERFACE).join(', ')})`);
  }
  if (!/^\s*export invoke:/m.test(wit)) {
    const exported = [...wit.matchAll(/^\s*export ([\w-]+)/gm)].map((m) => m[1]).join(', ') || 'nothing';
    throw new PlughostError('INVALID_MODULE', `component does not export invoke (it exports ${exported}); it is not a plughost:plugin/plugin component`);
  }
  if (!INVOKE_SIGNATURE.test(wit)) {
    throw new PlughostError('INVALID_MODULE', 'component exports invoke with the wrong type; expected func(name: option<string>, args: list<u8>) -> result<list<u8>, string>');
  }
  // every other export: one the plugin world defines, with its type
  for (const m of wit.matchAll(/^\s*export ([^;]+);$/gm)) {
    const [, name, type] = /^([\w-]+): (func.*)$/.exec(m[1]!.trim()) ?? [undefined, m[1]!.trim(), undefined];
    const expected = PLUGIN_EXPORTS[name!];
    if (!expected) {
      throw new PlughostError('INVALID_MODULE', `component exports ${name}, which the plugin world (wit/plugin.wit) does not define; it defines ${Object.keys(PLUGIN_EXPORTS).join(', ')}`);
    }
    if (type!.replaceAll('list<u8>', 'value') !== expected) {
      throw new PlughostError('INVALID_MODULE', `component exports ${name}: ${type}, but wit/plugin.wit says ${name}: ${expected}`);
    }
  }
  return imports;
}

const undefinedHostFunction = (name: string) =>
  new PlughostError('INVALID_MODULE', `component imports "${name}" from ${HOST_INTERFACE}, which wit/plugin.wit does not define (it defines ${Object.keys(HOST_FUNCTIONS).join(', ')})`);

/**
 * Each host function a core module imports must be one wit/plugin.wit defines, with the
 * core type its WIT type lowers to: anything else would load and then fail on every call.
 */
function checkHostImports(core: Uint8Array, file: string): void {
  for (const [name, type] of funcImports(core, HOST_INTERFACE)) {
    const expected = HOST_FUNCTIONS[name];
    if (!expected) throw undefinedHostFunction(name);
    const want = coreType(Array.from({ length: expected.params }, () => 'i32'), []);
    const got = type ? coreType(type.params, type.results) : 'a type plughost cannot read';
    if (got !== want) {
      throw new PlughostError('INVALID_MODULE', `component imports ${HOST_INTERFACE} "${name}" with another type than wit/plugin.wit's ${name}: ${expected.wit} (core module ${file} has ${got}, the WIT lowers to ${want})`);
    }
  }
}

/**
 * Each host function the component imports, with the WIT type wit/plugin.wit gives it, read
 * from the component's own types: those that lower alike in a core module (`string` and
 * `list<u8>` are both two i32) are told apart here.
 */
function checkHostImportTypes(bytes: Uint8Array): void {
  const imported = importedFunctions(bytes, HOST_INTERFACE);
  if ('unreadable' in imported) throw new PlughostError('INVALID_MODULE', `component imports ${HOST_INTERFACE}, but plughost cannot read the types of its functions: ${imported.unreadable}`);
  for (const [name, type] of imported.functions) {
    const expected = HOST_FUNCTIONS[name];
    if (!expected) throw undefinedHostFunction(name);
    if (type !== writtenOut(expected.wit)) {
      throw new PlughostError('INVALID_MODULE', `component imports ${HOST_INTERFACE} "${name}" as ${type}, but wit/plugin.wit says ${name}: ${expected.wit}`);
    }
  }
}

/** jco refusing the bytes is INVALID_MODULE; a lost transpiler worker stays what it is (INTERNAL, UNAVAILABLE). */
function refused(e: unknown): unknown {
  return e instanceof JcoError ? new PlughostError('INVALID_MODULE', `malformed component: ${firstLine(messageOf(e))}`, { cause: e }) : e;
}

function firstLine(s: string): string {
  return s.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 3).join(': ');
}

/** Wraps a guest's cabi_realloc (glue source, evaluated with it): a bad pointer traps the call. */
const CHECKED_REALLOC = `function __checkedRealloc(realloc, memoryOf) {
  return (old, oldSize, align, size) => {
    const p = realloc(old, oldSize, align, size) >>> 0;
    if (align > 1 && p % align !== 0) throw new WebAssembly.RuntimeError('cabi_realloc returned ' + p + ', which is not aligned to ' + align);
    const memory = memoryOf();
    if (memory && p + size > memory.buffer.byteLength) throw new WebAssembly.RuntimeError('cabi_realloc returned ' + p + ', where ' + size + ' bytes do not fit in the guest memory of ' + memory.buffer.byteLength + ' bytes');
    return p;
  };
}`;

/** A loop of jco's that lifts a list element by element: `for (let i = 0; i < len2; i++) { const base = base2 + i * 12;`. */
const LIST_LOOP = /for \(let i = 0; i < (len\d+); i\+\+\) \{(\s*)const base = (base\d+) \+ i \* (\d+);/g;
/** Its generic form, used for imports jco lowers asynchronously (not plughost's, but counted all the same). */
const ASYNC_LIST_LOOP = /for \(var i = 0; i < len; i\+\+\) \{\s*const elemPtr = dataPtr \+ i \* elemSize32;/g;
/** The element address of every loop that reads a list's elements, patched or not (whatever its index is called). */
const LIFTING_BASE = /const base = base\d+ \+ \w+ \* \d+;/g;

const count = (s: string, re: RegExp) => s.match(re)?.length ?? 0;

/** Rewrites jco's ESM glue so `new Function` can evaluate it (no module cache: it can be freed). */
export function prepareGlue(source: string): string {
  const body = source
    .replace(/^"use components";/, '')
    .replace(/^export function instantiate\(/m, 'function instantiate(')
    .replace(/^export const _util\b/m, 'const _util')
    .replace(/import\.meta\.url/g, '"file:///plughost/"')
    // every entry and exit reads process.env.JCO_DEBUG: measured to halve import-heavy calls
    .replace('if (!globalThis?.process?.env?.JCO_DEBUG) { return; }', 'return;')
    // jco lifts a list<u8> with ArrayBuffer.slice, which clamps a pointer out of bounds to
    // an empty list; the canonical ABI says trap. A view throws RangeError out of bounds.
    // The copy counts against the lift budget (lift-budget.ts).
    .replace(/new (\w+Array)\((memory\d+)\.buffer\.slice\((\w+), \3 \+ (\w+) \* \d+\)\)/g, '__liftArray($1, $2, $3, $4)')
    // a WIT string is UTF-8 (the canonical ABI traps on anything else); jco's decoder would
    // replace bad bytes, so a key could be stored under another one than the guest meant
    .replace(/new TextDecoder\(\)/g, "new TextDecoder('utf-8', { fatal: true })")
    // every string decoded, and every list lifted element by element, counts against it too
    .replace(/new TextDecoder\(([^()]*)\)/g, '__budgeted(new TextDecoder($1))')
    .replace(LIST_LOOP, '__liftList($1, $4); for (let i = 0; i < $1; i++) {$2const base = $3 + i * $4;')
    .replace(ASYNC_LIST_LOOP, '__liftList(len, elemSize32); $&')
    // jco prints a raw "ERROR: ..." line before each error it throws; the error itself is
    // reported (in the call's outcome and the JSON log), and nothing else may reach stderr
    .replace(/\bconsole\.error\(/g, '(() => {})(')
    // jco writes wherever the guest's cabi_realloc says; the canonical ABI traps on a pointer
    // that is not aligned or where the bytes do not fit in the guest's memory
    .replace(/\b(realloc(\d+)) = (exports\d+)\.cabi_realloc;/g, "$1 = __checkedRealloc($3.cabi_realloc, () => (typeof memory$2 === 'undefined' ? undefined : memory$2));");
  if (/^\s*(?:import|export)\s/m.test(body)) throw new PlughostError('INTERNAL', 'jco glue has ESM syntax plughost does not know how to rewrite');
  if (/new TextDecoder\((?:\)|['"]utf-?8['"]\))/i.test(body)) throw new PlughostError('INTERNAL', 'jco glue decodes strings in a way plughost does not know how to make strict');
  const unchecked = /\brealloc\d+ = exports\d+\.cabi_realloc;/.test(body) || (body.includes('cabi_realloc') && !body.includes('__checkedRealloc('));
  if (unchecked) throw new PlughostError('INTERNAL', 'jco glue takes cabi_realloc in a way plughost does not know how to check');
  const uncounted = /\.buffer\.slice\(/.test(body) || count(body, /new TextDecoder\(/g) !== count(body, /__budgeted\(new TextDecoder\(/g) || count(body, LIFTING_BASE) !== count(body, /__liftList\(len\d+, \d+\); for/g);
  if (uncounted) throw new PlughostError('INTERNAL', 'jco glue copies guest memory in a way plughost does not know how to count against its lift budget');
  return `${CHECKED_REALLOC}\n${LIFT_GUARDS}\n${body}\nreturn { instantiate };`;
}

/**
 * Whether jco's glue lifts `invoke` from core instance 0's exports of the canonical names,
 * with UTF-8 strings: what worker/direct-invoke.ts does by hand.
 */
function liftsInvokeDirectly(glue: string, coreExports: string[]): boolean {
  const has = (line: string) => new RegExp(`^\\s*${line.replace(/[.$]/g, '\\$&')};$`, 'm').test(glue);
  const postReturn = coreExports.includes('cabi_post_invoke');
  return (
    has('exports0Invoke = exports0.invoke') &&
    has('memory0 = exports0.memory') &&
    has('realloc0 = exports0.cabi_realloc') &&
    postReturn === has('postReturn0 = exports0.cabi_post_invoke') &&
    glue.includes('_utf8AllocateAndEncode(e, realloc0, memory0)')
  );
}

export async function compileComponent(bytes: Uint8Array, options: { maxMemoryBytes: number }): Promise<CompiledComponent> {
  const kind = binaryKind(bytes);
  if (kind === 'not-wasm') throw new PlughostError('INVALID_MODULE', 'not a WebAssembly binary (bad magic or version)');
  if (kind === 'core-module') {
    throw new PlughostError('INVALID_MODULE', 'a core WebAssembly module, not a component; wrap it with `wasm-tools component new` (or jco) against wit/plugin.wit');
  }
  const imports = await checkWorld(bytes);
  const t0 = performance.now();
  let files: Record<string, Uint8Array>;
  let exported: [string, string][];
  try {
    ({ files, exports: exported } = await transpiler().transpile(bytes));
  } catch (e) {
    throw refused(e);
  }
  const t1 = performance.now();
  const maxPages = Math.floor(options.maxMemoryBytes / WASM_PAGE);
  const coreModules: Record<string, WebAssembly.Module> = {};
  let glueSource: string | undefined;
  for (const [path, content] of Object.entries(files)) {
    const file = path.split('/').pop()!;
    if (file.endsWith('.wasm')) {
      const capped = capCoreMemory(content, maxPages, file);
      try {
        coreModules[file] = await WebAssembly.compile(capped as Uint8Array<ArrayBuffer>);
      } catch (e) {
        throw new PlughostError('INVALID_MODULE', `core module ${file} does not compile: ${messageOf(e)}`, { cause: e });
      }
    } else if (file.endsWith('.js')) {
      glueSource = Buffer.from(content).toString('utf8');
    }
  }
  if (!glueSource) throw new PlughostError('INTERNAL', 'jco produced no glue');
  const names = new Set(exported.map(([n]) => n));
  const exports = new Set<PluginExport>(['invoke']);
  for (const e of OPTIONAL_EXPORTS) if (names.has(e)) exports.add(e);
  const hostImports = new Set<string>();
  for (const m of Object.values(coreModules)) {
    for (const i of WebAssembly.Module.imports(m)) if (i.module === HOST_INTERFACE) hostImports.add(i.name);
  }
  for (const [file, content] of Object.entries(files)) if (file.endsWith('.wasm')) checkHostImports(content, file.split('/').pop()!);
  if (imports.includes(HOST_INTERFACE)) checkHostImportTypes(bytes);
  const cores = Object.values(coreModules);
  const directInvoke = cores.length === 1 && WebAssembly.Module.imports(cores[0]!).length === 0 && liftsInvokeDirectly(glueSource, WebAssembly.Module.exports(cores[0]!).map((e) => e.name));
  return {
    hash: hashOf(bytes),
    sizeBytes: bytes.length,
    glue: prepareGlue(glueSource),
    coreModules,
    exports,
    hostImports,
    directInvoke,
    maxMemoryBytes: maxPages * WASM_PAGE,
    timings: { transpileMs: t1 - t0, compileMs: performance.now() - t1 },
  };
}
