// The WIT types of the functions a component imports from one instance, read from the
// component's binary (the component model's type, alias, import and export sections), so
// that types which lower alike (`string` and `list<u8>` are both (i32, i32) in a core module)
// can be told apart at push. jco's WIT printer shows only the component's own world, not the
// bodies of the interfaces it imports, so the binary is where the types are.
//
// Just enough of the binary format (design/mvp/Binary.md of the component model): the index
// spaces of types and instances, followed through imports, aliases, type definitions and
// exports. The component has been validated by jco before this runs; anything this reader
// does not know makes what depends on it unreadable, never another type.
import { readName, readU32 } from './wasm-binary.js';

/** A component-level type, structurally (names of types do not matter, as in the component model). */
type Type =
  | { k: 'prim'; name: string }
  | { k: 'list'; of: Type; length?: number }
  | { k: 'option' | 'own' | 'borrow'; of: Type }
  | { k: 'stream' | 'future'; of: Type | undefined }
  | { k: 'result'; ok: Type | undefined; err: Type | undefined }
  | { k: 'tuple'; of: Type[] }
  | { k: 'record'; fields: [string, Type][] }
  | { k: 'variant'; cases: [string, Type | undefined][] }
  | { k: 'enum' | 'flags'; names: string[] }
  | { k: 'func'; params: [string, Type][]; result: Type | undefined }
  | { k: 'instance'; exports: Map<string, Type> }
  | { k: 'resource' | 'component' }
  | { k: 'unknown'; why: string };

const PRIMITIVES: Record<number, string> = {
  0x7f: 'bool', 0x7e: 's8', 0x7d: 'u8', 0x7c: 's16', 0x7b: 'u16', 0x7a: 's32', 0x79: 'u32', 0x78: 's64',
  0x77: 'u64', 0x76: 'f32', 0x75: 'f64', 0x74: 'char', 0x73: 'string', 0x64: 'error-context',
};

class Unreadable extends Error {}

const unknown = (why: string): Type => ({ k: 'unknown', why });

/** A type or instance index space: a component's, or a component or instance type's own. */
class Scope {
  readonly types: Type[] = [];
  readonly instances: Type[] = [];
  constructor(readonly parent?: Scope) {}
  type(i: number): Type {
    return this.types[i] ?? unknown(`type ${i} is not defined where it is used`);
  }
  outer(count: number): Scope {
    let s: Scope | undefined = this;
    for (let i = 0; i < count && s; i++) s = s.parent;
    if (!s) throw new Unreadable(`an outer alias reaches past the outermost component`);
    return s;
  }
}

/** Reads bytes[pos..end); every read past `end` is unreadable. */
class Reader {
  constructor(
    private readonly bytes: Uint8Array,
    public pos: number,
    readonly end: number,
  ) {}
  byte(): number {
    if (this.pos >= this.end) throw new Unreadable('truncated');
    return this.bytes[this.pos++]!;
  }
  peek(): number {
    if (this.pos >= this.end) throw new Unreadable('truncated');
    return this.bytes[this.pos]!;
  }
  u32(): number {
    const [n, p] = readU32(this.bytes, this.pos);
    if (p > this.end) throw new Unreadable('truncated');
    this.pos = p;
    return n;
  }
  name(): string {
    const [s, p] = readName(this.bytes, this.pos);
    if (p > this.end) throw new Unreadable('truncated');
    this.pos = p;
    return s;
  }
  vec<T>(item: () => T): T[] {
    const n = this.u32();
    if (n > this.end - this.pos) throw new Unreadable(`a vector of ${n} items in ${this.end - this.pos} bytes`);
    return Array.from({ length: n }, item);
  }
  optional<T>(item: () => T): T | undefined {
    const b = this.byte();
    if (b === 0) return undefined;
    if (b === 1) return item();
    throw new Unreadable(`option byte 0x${b.toString(16)}`);
  }
  /** importname' / exportname': 0x00 (or the older 0x01) and the name. */
  externName(): string {
    const b = this.byte();
    if (b !== 0x00 && b !== 0x01) throw new Unreadable(`import or export name kind 0x${b.toString(16)}`);
    return this.name();
  }
}

/** Nesting of component and instance types this reader follows; deeper is unreadable. */
const MAX_DEPTH = 16;

function valType(r: Reader, scope: Scope): Type {
  const b = r.peek();
  if (PRIMITIVES[b]) {
    r.pos++;
    return { k: 'prim', name: PRIMITIVES[b]! };
  }
  return scope.type(r.u32()); // a non-negative s33 reads as a u32
}

function defType(r: Reader, scope: Scope, depth: number): Type {
  const b = r.byte();
  const label = () => r.name();
  switch (b) {
    case 0x40: {
      const params = r.vec((): [string, Type] => [label(), valType(r, scope)]);
      const kind = r.byte();
      if (kind === 0x00) return { k: 'func', params, result: valType(r, scope) };
      if (kind === 0x01 && r.u32() === 0) return { k: 'func', params, result: undefined };
      throw new Unreadable('a function with named results');
    }
    case 0x41:
    case 0x42: {
      if (depth >= MAX_DEPTH) throw new Unreadable('component or instance types nested too deep');
      const exports = declarations(r, new Scope(scope), depth + 1, b === 0x41);
      return b === 0x42 ? { k: 'instance', exports } : { k: 'component' };
    }
    case 0x3f:
      if (r.byte() !== 0x7f) throw new Unreadable('a resource represented by another type than i32');
      r.optional(() => r.u32());
      return { k: 'resource' };
    case 0x72:
      return { k: 'record', fields: r.vec((): [string, Type] => [label(), valType(r, scope)]) };
    case 0x71:
      return {
        k: 'variant',
        cases: r.vec((): [string, Type | undefined] => {
          const c: [string, Type | undefined] = [label(), r.optional(() => valType(r, scope))];
          if (r.byte() === 0x01) r.u32(); // an older `refines`
          return c;
        }),
      };
    case 0x70:
      return { k: 'list', of: valType(r, scope) };
    case 0x67:
      return { k: 'list', of: valType(r, scope), length: r.u32() };
    case 0x6f:
      return { k: 'tuple', of: r.vec(() => valType(r, scope)) };
    case 0x6e:
      return { k: 'flags', names: r.vec(label) };
    case 0x6d:
      return { k: 'enum', names: r.vec(label) };
    case 0x6b:
      return { k: 'option', of: valType(r, scope) };
    case 0x6a:
      return { k: 'result', ok: r.optional(() => valType(r, scope)), err: r.optional(() => valType(r, scope)) };
    case 0x69:
    case 0x68:
      return { k: b === 0x69 ? 'own' : 'borrow', of: scope.type(r.u32()) };
    case 0x66:
    case 0x65:
      return { k: b === 0x66 ? 'stream' : 'future', of: r.optional(() => valType(r, scope)) };
    default:
      if (PRIMITIVES[b]) return { k: 'prim', name: PRIMITIVES[b]! };
      throw new Unreadable(`type constructor 0x${b.toString(16)}`);
  }
}

/** An alias (sort, target) entered into `scope`'s index spaces. */
function alias(r: Reader, scope: Scope): void {
  let sort = r.byte();
  if (sort === 0x00) {
    r.byte(); // a core sort: nothing this reader follows
    sort = -1;
  }
  const target = r.byte();
  let aliased: Type;
  if (target === 0x00) {
    const instance = scope.instances[r.u32()];
    const name = r.name();
    aliased = instance?.k === 'instance' ? (instance.exports.get(name) ?? unknown(`the instance has no export ${name}`)) : unknown('an export of an instance this reader cannot follow');
  } else if (target === 0x01) {
    r.u32();
    r.name();
    return;
  } else if (target === 0x02) {
    const outer = scope.outer(r.u32());
    aliased = outer.type(r.u32());
  } else throw new Unreadable(`alias target 0x${target.toString(16)}`);
  if (sort === 0x03) scope.types.push(aliased);
  else if (sort === 0x05) scope.instances.push(aliased);
}

/** An externdesc: enters what it introduces into `scope` and returns its type (functions: their type). */
function externDesc(r: Reader, scope: Scope): Type | undefined {
  const sort = r.byte();
  switch (sort) {
    case 0x00:
      if (r.byte() !== 0x11) throw new Unreadable('a core extern other than a module');
      r.u32();
      return undefined;
    case 0x01:
      return scope.type(r.u32());
    case 0x02:
      if (r.byte() === 0x00) r.u32();
      else valType(r, scope);
      return undefined;
    case 0x03: {
      const bound = r.byte();
      const t: Type = bound === 0x00 ? scope.type(r.u32()) : bound === 0x01 ? { k: 'resource' } : unknown(`type bound 0x${bound.toString(16)}`);
      scope.types.push(t);
      return t;
    }
    case 0x04:
      r.u32();
      return undefined;
    case 0x05: {
      const t = scope.type(r.u32());
      scope.instances.push(t);
      return t;
    }
    default:
      throw new Unreadable(`extern kind 0x${sort.toString(16)}`);
  }
}

/** The declarations of a component or instance type; returns what it exports. */
function declarations(r: Reader, scope: Scope, depth: number, component: boolean): Map<string, Type> {
  const exports = new Map<string, Type>();
  const n = r.u32();
  for (let i = 0; i < n; i++) {
    const kind = r.byte();
    if (kind === 0x01) scope.types.push(defType(r, scope, depth));
    else if (kind === 0x02) alias(r, scope);
    else if (kind === 0x03 && component) {
      r.externName();
      externDesc(r, scope);
    } else if (kind === 0x04) {
      const name = r.externName();
      const t = externDesc(r, scope);
      if (t) exports.set(name, t);
    } else throw new Unreadable(kind === 0x00 ? 'a core type declared in a component-level type' : `declaration kind 0x${kind.toString(16)}`);
  }
  return exports;
}

/** The functions of an imported instance by name, with their types; or why they cannot be read. */
export type ImportedFunctions = { functions: Map<string, string> } | { unreadable: string };

/**
 * The functions of the instance a component imports as `name` (which it does import), by
 * name, with their types as WIT prints them (`func(key: string) -> result<option<list<u8>>,
 * string>`: types by their structure, never their names; a part that cannot be read is `?`
 * and why).
 */
export function importedFunctions(component: Uint8Array, name: string): ImportedFunctions {
  const scope = new Scope();
  let pos = 8;
  try {
    while (pos < component.length) {
      const id = component[pos]!;
      const [size, start] = readU32(component, pos + 1);
      pos = start + size;
      if (pos > component.length) throw new Unreadable('truncated');
      const r = new Reader(component, start, pos);
      if (id === 5) for (let n = r.u32(); n > 0; n--) scope.instances.push(unknown('an instance the component makes itself'));
      else if (id === 6) r.vec(() => alias(r, scope));
      else if (id === 7) {
        const n = r.u32();
        for (let i = 0; i < n; i++) {
          try {
            scope.types.push(defType(r, scope, 0));
          } catch (e) {
            if (!(e instanceof Unreadable)) throw e;
            // the rest of this section's types are in doubt, not how many there are
            for (; i < n; i++) scope.types.push(unknown(e.message));
          }
        }
      } else if (id === 10) {
        const n = r.u32();
        for (let i = 0; i < n; i++) {
          const imported = r.externName();
          const t = externDesc(r, scope);
          if (imported === name) return functionsOf(t);
        }
      } else if (id === 11) {
        r.vec(() => {
          r.externName();
          let sort = r.byte();
          if (sort === 0x00) sort = -r.byte() - 1; // a core sort
          const i = r.u32();
          r.optional(() => externDesc(r, new Scope(scope))); // a type ascription: the same type
          if (sort === 0x03) scope.types.push(scope.type(i));
          else if (sort === 0x05) scope.instances.push(scope.instances[i] ?? unknown('an instance not defined where it is used'));
        });
      }
    }
    return unreadable(`it imports no ${name}`);
  } catch (e) {
    if (e instanceof Unreadable || (e instanceof Error && /truncated|LEB128/.test(e.message))) return unreadable(e.message);
    throw e;
  }
}

const unreadable = (why: string): ImportedFunctions => ({ unreadable: why });

function functionsOf(t: Type | undefined): ImportedFunctions {
  if (t?.k !== 'instance') return unreadable(`what it imports is not an instance (${t ? render(t) : 'nothing'})`);
  const functions = new Map<string, string>();
  for (const [name, f] of t.exports) if (f.k === 'func' || f.k === 'unknown') functions.set(name, render(f));
  return { functions };
}

/** Longest rendering: a type bigger than any of wit/plugin.wit's is shown cut (and matches none). */
const MAX_RENDER = 2048;

/** WIT text of a type, by structure (`record { a: u32 }`, not a record's name); unknowns as `?`. */
function render(t: Type): string {
  let left = MAX_RENDER;
  const go = (t: Type): string => {
    if (--left < 0) throw new RangeError('too large');
    const list = (ts: Type[]) => ts.map(go).join(', ');
    const named = (fs: [string, Type][]) => fs.map(([n, f]) => `${n}: ${go(f)}`).join(', ');
    let s: string;
    switch (t.k) {
      case 'prim': s = t.name; break;
      case 'list': s = `list<${go(t.of)}${t.length === undefined ? '' : `, ${t.length}`}>`; break;
      case 'option': case 'own': case 'borrow': s = `${t.k}<${go(t.of)}>`; break;
      case 'stream': case 'future': s = t.of ? `${t.k}<${go(t.of)}>` : t.k; break;
      case 'result': s = t.ok || t.err ? `result<${t.ok ? go(t.ok) : '_'}${t.err ? `, ${go(t.err)}` : ''}>` : 'result'; break;
      case 'tuple': s = `tuple<${list(t.of)}>`; break;
      case 'record': s = `record { ${named(t.fields)} }`; break;
      case 'variant': s = `variant { ${t.cases.map(([n, c]) => (c ? `${n}(${go(c)})` : n)).join(', ')} }`; break;
      case 'enum': case 'flags': s = `${t.k} { ${t.names.join(', ')} }`; break;
      case 'func': s = `func(${named(t.params)})${t.result ? ` -> ${go(t.result)}` : ''}`; break;
      case 'unknown': s = `? (${t.why})`; break;
      default: s = t.k;
    }
    left -= s.length;
    return s;
  };
  try {
    return go(t);
  } catch (e) {
    if (e instanceof RangeError) return `? (a type of more than ${MAX_RENDER} characters)`;
    throw e;
  }
}
