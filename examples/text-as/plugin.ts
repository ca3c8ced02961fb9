// text: string similarity, a per-word counter kept in plughost's KV, and a row enriched by a
// query the engine answers, in AssemblyScript.
// The canonical ABI is written by hand (see ../README.md): each export takes and returns
// pointers into linear memory, and the host frees nothing of ours.
//
// Functions (args and results are UTF-8 text):
//   similarity   "a\nb" -> Levenshtein similarity of the two lines, 0..1, e.g. "0.571"
//   distance     "a\nb" -> Levenshtein edit distance, e.g. "3"
//   count        "word" -> adds one to that word's counter in KV, returns the new count
//   peek         "word" -> the word's count without changing it (read-only KV)
//   enrich       '{"id":"tobie",...}' -> asks the engine that opened the Stream
//                SELECT_PERSON with the row as its vars, returns {"row":<row>,"person":<answer>}
// Each also takes many rows in one entry through invoke-batch (one result per row).

// ---- host imports: plughost:plugin/host@0.1.0 ----
@external("plughost:plugin/host@0.1.0", "kv-get")
declare function hostKvGet(keyPtr: usize, keyLen: usize, ret: usize): void;
@external("plughost:plugin/host@0.1.0", "kv-set")
declare function hostKvSet(keyPtr: usize, keyLen: usize, valPtr: usize, valLen: usize, ret: usize): void;
@external("plughost:plugin/host@0.1.0", "sql")
declare function hostSql(queryPtr: usize, queryLen: usize, varsPtr: usize, varsLen: usize, ret: usize): void;

// ---- return areas: one for exports, one for imports (a call never nests them) ----
const RET = memory.data(16);
const IRET = memory.data(16);

/** Copies a string's UTF-8 bytes to unmanaged memory (freed in the post-return export). */
function utf8(s: string): usize {
  const b = String.UTF8.encode(s);
  const p = heap.alloc(b.byteLength);
  memory.copy(p, changetype<usize>(b), b.byteLength);
  lastLen = b.byteLength;
  return p;
}
let lastLen: usize = 0;

/** result<list<u8>, string> / result<string, string>: tag, ptr, len. */
function ok(s: string): usize {
  const p = utf8(s);
  store<u8>(RET, 0); store<u32>(RET, <u32>p, 4); store<u32>(RET, <u32>lastLen, 8);
  return RET;
}
function err(s: string): usize {
  const p = utf8(s);
  store<u8>(RET, 1); store<u32>(RET, <u32>p, 4); store<u32>(RET, <u32>lastLen, 8);
  return RET;
}

/** The guest's allocator, which the host calls to pass arguments in. */
export function cabi_realloc(old: usize, oldSize: usize, align: usize, newSize: usize): usize {
  return old ? heap.realloc(old, newSize) : heap.alloc(newSize);
}

// ---- the functions ----
function levenshtein(a: string, b: string): i32 {
  const n = b.length;
  let prev = new Array<i32>(n + 1);
  let cur = new Array<i32>(n + 1);
  for (let j = 0; j <= n; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= n; j++) {
      const cost = a.charCodeAt(i - 1) == b.charCodeAt(j - 1) ? 0 : 1;
      cur[j] = min(min(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + cost);
    }
    const t = prev; prev = cur; cur = t;
  }
  return prev[n];
}

function twoLines(args: string): string[] | null {
  const i = args.indexOf("\n");
  if (i < 0) return null;
  return [args.substring(0, i), args.substring(i + 1)];
}

function fixed3(x: f64): string {
  const k = <i32>Math.round(x * 1000);
  const frac = (k % 1000).toString();
  return (k / 1000).toString() + "." + "000".substring(frac.length) + frac;
}

/** The word's count in KV (0 when absent), or -1 with the host's message in `kvError`. */
let kvError: string = "";
function readCount(key: string): i64 {
  const k = utf8(key);
  const kl = lastLen;
  hostKvGet(k, kl, IRET);
  heap.free(k);
  if (load<u8>(IRET)) {
    kvError = String.UTF8.decodeUnsafe(load<u32>(IRET, 4), load<u32>(IRET, 8));
    return -1;
  }
  if (!load<u8>(IRET, 4)) return 0;
  const p = <usize>load<u32>(IRET, 8);
  const n = I64.parseInt(String.UTF8.decodeUnsafe(p, load<u32>(IRET, 12)));
  heap.free(p);
  return n;
}

/** Calls a host import taking two strings' (ptr, len) and the import return area, with copies of `a` and `b` freed after. */
function withTwoStrings(hostImport: (aPtr: usize, aLen: usize, bPtr: usize, bLen: usize, ret: usize) => void, a: string, b: string): void {
  const ap = utf8(a);
  const al = lastLen;
  const bp = utf8(b);
  hostImport(ap, al, bp, lastLen, IRET);
  heap.free(ap);
  heap.free(bp);
}

/** The query enrich asks; its vars are the row itself (JSON), so `$id` is the row's id. */
const SELECT_PERSON = "SELECT name, city FROM person WHERE id = $id";

/**
 * sql(query, vars) -> result<list<u8>, string>: the engine's answer as text, or null with the
 * engine's (or the host's) message in `sqlError`. The host allocates the answer's bytes with
 * our cabi_realloc; they are ours to free.
 */
let sqlError: string = "";
function askEngine(query: string, vars: string): string | null {
  withTwoStrings(hostSql, query, vars);
  const p = <usize>load<u32>(IRET, 4);
  const n = <usize>load<u32>(IRET, 8);
  const text = String.UTF8.decodeUnsafe(p, n);
  // an answer (a list) is always allocated, even empty; an empty err string is not (see ../README.md)
  const failed = load<u8>(IRET) != 0;
  if (!failed || n) heap.free(p);
  if (failed) {
    sqlError = text;
    return null;
  }
  return text;
}

function invokeText(fn: string, args: string): usize {
  if (fn == "enrich") {
    if (args.length == 0) return err("enrich takes a row: a JSON object with an id");
    const answer = askEngine(SELECT_PERSON, args);
    if (answer == null) return err(sqlError);
    return ok('{"row":' + args + ',"person":' + (answer.length ? answer : "null") + "}");
  }
  if (fn == "similarity" || fn == "distance") {
    const lines = twoLines(args);
    if (lines == null) return err(fn + " takes two lines of text: a, a newline, then b");
    const a = lines[0], b = lines[1];
    const d = levenshtein(a, b);
    if (fn == "distance") return ok(d.toString());
    const longest = max(a.length, b.length);
    return ok(fixed3(longest == 0 ? 1.0 : 1.0 - <f64>d / <f64>longest));
  }
  if (fn == "count" || fn == "peek") {
    if (args.length == 0) return err(fn + " takes a word");
    const key = "word/" + args;
    const n = readCount(key);
    if (n < 0) return err(kvError);
    if (fn == "peek") return ok(n.toString());
    const next = (n + 1).toString();
    withTwoStrings(hostKvSet, key, next);
    if (load<u8>(IRET)) return err(String.UTF8.decodeUnsafe(load<u32>(IRET, 4), load<u32>(IRET, 8)));
    return ok(next);
  }
  return err("no function " + fn + "; try similarity, distance, count, peek or enrich");
}

/** The function's name (the default: similarity), its bytes freed. */
function takeName(hasName: i32, namePtr: usize, nameLen: usize): string {
  if (!hasName) return "similarity";
  const fn = String.UTF8.decodeUnsafe(namePtr, nameLen);
  // jco passes an empty string as (1, 0) without allocating it; a list (args, a row) is always allocated
  if (nameLen) heap.free(namePtr);
  return fn;
}

/** A list<u8> the host passed in, as text, its bytes freed. */
function takeText(ptr: usize, len: usize): string {
  const s = String.UTF8.decodeUnsafe(ptr, len);
  heap.free(ptr);
  return s;
}

export function invoke(hasName: i32, namePtr: usize, nameLen: usize, argsPtr: usize, argsLen: usize): usize {
  const fn = takeName(hasName, namePtr, nameLen);
  return invokeText(fn, takeText(argsPtr, argsLen));
}
export function cabi_post_invoke(ret: usize): void {
  heap.free(<usize>load<u32>(ret, 4));
}

/**
 * invoke-batch (renamed from invoke_batch by ../build.ts): many rows of one function in one
 * entry. `rows` is a list<list<u8>>: (ptr, len) pairs, 8 bytes each. The answer is a
 * list<result<list<u8>, string>>, one element per row in row order, 12 bytes each (tag, ptr,
 * len: what `invoke` puts in its return area). Every function works here, count too: the entry
 * is one KV transaction, committed when it returns, so a row's err does not undo the others.
 */
export function invoke_batch(hasName: i32, namePtr: usize, nameLen: usize, rowsPtr: usize, rowsLen: usize): usize {
  const fn = takeName(hasName, namePtr, nameLen);
  const out = heap.alloc(12 * rowsLen); // heap blocks are 16-aligned; the list needs 4
  for (let i: usize = 0; i < rowsLen; i++) {
    const row = rowsPtr + 8 * i;
    memory.copy(out + 12 * i, invokeText(fn, takeText(<usize>load<u32>(row), <usize>load<u32>(row, 4))), 12);
  }
  heap.free(rowsPtr);
  store<u32>(RET, <u32>out); store<u32>(RET, <u32>rowsLen, 4); // exactly one result per row
  return RET;
}
export function cabi_post_invoke_batch(ret: usize): void {
  const out = <usize>load<u32>(ret);
  const n = <usize>load<u32>(ret, 4);
  for (let i: usize = 0; i < n; i++) heap.free(<usize>load<u32>(out + 12 * i, 4));
  heap.free(out);
}

// ---- introspection: what `plughost describe` shows ----
const NAMES: string[] = ["similarity", "distance", "count", "peek", "enrich"];
const COMMENTS: string[] = [
  "Levenshtein similarity of two lines of text (1 - distance / longer length), as text with 3 decimals",
  "Levenshtein edit distance between two lines of text",
  "adds one to a word's counter, kept per tenant in plughost's KV",
  "a word's counter, without changing it",
  "a row (JSON with an id) and the person the engine finds for its id, asked with sql over the engine's Stream (serve_sql)",
];

function indexOfName(hasName: i32, namePtr: usize, nameLen: usize): i32 {
  return NAMES.indexOf(takeName(hasName, namePtr, nameLen)); // the default function is similarity
}

/** list<option<string>>: 12 bytes an element (tag, ptr, len); "none" is the default function. */
export function list_functions(): usize {
  const table = heap.alloc(12 * (NAMES.length + 1));
  store<u8>(table, 0);
  for (let i = 0; i < NAMES.length; i++) {
    const e = table + 12 * (i + 1);
    const p = utf8(NAMES[i]);
    store<u8>(e, 1); store<u32>(e, <u32>p, 4); store<u32>(e, <u32>lastLen, 8);
  }
  store<u32>(RET, <u32>table); store<u32>(RET, NAMES.length + 1, 4);
  return RET;
}

/** result<list<tuple<string, string>>, string>: 16 bytes a tuple. */
export function function_args(hasName: i32, namePtr: usize, nameLen: usize): usize {
  const i = indexOfName(hasName, namePtr, nameLen);
  if (i < 0) return err("no such function");
  const two = i < 2;
  const list = heap.alloc(two ? 32 : 16);
  const pairs: string[] = two ? ["a", "string (first line)", "b", "string (second line)"] : i == 4 ? ["row", "JSON object with an id"] : ["word", "string"];
  for (let k = 0; k < pairs.length; k++) {
    const p = utf8(pairs[k]);
    store<u32>(list + 8 * k, <u32>p); store<u32>(list + 8 * k + 4, <u32>lastLen);
  }
  store<u8>(RET, 0); store<u32>(RET, <u32>list, 4); store<u32>(RET, two ? 2 : 1, 8);
  return RET;
}

export function function_returns(hasName: i32, namePtr: usize, nameLen: usize): usize {
  const i = indexOfName(hasName, namePtr, nameLen);
  if (i < 0) return err("no such function");
  return ok(i == 0 ? "decimal text 0..1" : i == 4 ? "JSON {\"row\": the row, \"person\": the engine's answer}" : "decimal text");
}

/** result<bool, string>: only count writes KV; peek gets read-only KV. */
export function function_writeable(hasName: i32, namePtr: usize, nameLen: usize): usize {
  const i = indexOfName(hasName, namePtr, nameLen);
  if (i < 0) return err("no such function");
  store<u8>(RET, 0); store<u8>(RET, i == 2 ? 1 : 0, 4);
  return RET;
}

/** result<option<string>, string>: tag, option tag at 4, ptr at 8, len at 12. */
export function function_comment(hasName: i32, namePtr: usize, nameLen: usize): usize {
  const i = indexOfName(hasName, namePtr, nameLen);
  if (i < 0) return err("no such function");
  const p = utf8(COMMENTS[i]);
  store<u8>(RET, 0); store<u8>(RET, 1, 4); store<u32>(RET, <u32>p, 8); store<u32>(RET, <u32>lastLen, 12);
  return RET;
}

/** result<_, string>: runs once per new controller, before its first call; nothing to set up here. */
export function init(): usize {
  store<u8>(RET, 0);
  return RET;
}
