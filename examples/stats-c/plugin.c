// stats: word-set similarity, a content hash, and a counter kept in plughost's KV, in C
// (Debian's clang + wasi-libc, no WASI imports: only malloc and friends). The canonical
// ABI is written by hand (see ../README.md).
//
// Functions (args and results are UTF-8 text; each also per row through invoke-batch):
//   jaccard   "a\nb" -> Jaccard similarity of the two lines' word sets, 0..1, e.g. "0.500"
//   fnv1a     any bytes -> their 32-bit FNV-1a hash as 8 hex digits
//   count     "key" -> adds one to that key's counter in KV, returns the new count
//   compare   "a\nb" -> both similarities of the two lines: this module's Jaccard, and the
//             text plugin's Levenshtein similarity, which it gets with `run` (under the
//             caller's token), e.g. "jaccard 0.500, levenshtein 0.571"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HOST(name) __attribute__((import_module("plughost:plugin/host@0.1.0"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))
#define S(s) s, sizeof(s) - 1

// result<option<list<u8>>, string>: tag at 0; ok: option tag at 4, ptr at 8, len at 12; err: ptr at 4, len at 8
typedef struct { uint8_t tag; uint32_t a, b, c; } ret4;
HOST("kv-get") extern void host_kv_get(const char *key, size_t key_len, ret4 *ret);
HOST("kv-set") extern void host_kv_set(const char *key, size_t key_len, const char *val, size_t val_len, ret4 *ret);
// run(module, option<function>, args) -> result<list<u8>, string>: tag at 0; ptr at 4, len at 8 (ok's bytes or err's text, ours to free)
HOST("run") extern void host_run(const char *module, size_t module_len, int32_t has_fn, const char *fn, size_t fn_len, const uint8_t *args, size_t args_len, ret4 *ret);

// an export's return area: result<T, string> as tag + up to three words
static ret4 RET;

EXPORT("cabi_realloc")
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
  (void)old_size; (void)align;
  return realloc(old, new_size);
}

static char *copy(const char *s, size_t n) { char *p = malloc(n ? n : 1); memcpy(p, s, n); return p; }
static ret4 *ok_text(const char *s, size_t n) { RET.tag = 0; RET.a = (uint32_t)copy(s, n); RET.b = n; return &RET; }
static ret4 *err_str(const char *s) { RET.tag = 1; RET.a = (uint32_t)copy(s, strlen(s)); RET.b = strlen(s); return &RET; }
static int is(const char *n, size_t nl, const char *s) { return strlen(s) == nl && memcmp(n, s, nl) == 0; }
// jco passes an empty string as (1, 0) without allocating it: free a name only when it has bytes
// (a list, such as args or a row, is always allocated, even when empty)
static void free_name(int32_t has_name, char *name, size_t len) { if (has_name && len) free(name); }

static size_t fmt_uint(char *out, uint64_t v) {
  char tmp[24]; size_t n = 0;
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

// ---- jaccard: word sets of two lines ----
typedef struct { const char *p; size_t n; } word;

static size_t words(const char *s, size_t n, word *out, size_t max) {
  size_t k = 0, i = 0;
  while (i < n && k < max) {
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    size_t start = i;
    while (i < n && s[i] != ' ' && s[i] != '\t') i++;
    if (i > start) {
      int dup = 0;
      for (size_t j = 0; j < k; j++) if (out[j].n == i - start && memcmp(out[j].p, s + start, i - start) == 0) dup = 1;
      if (!dup) out[k++] = (word){ s + start, i - start };
    }
  }
  return k;
}

static ret4 *jaccard(const char *args, size_t len) {
  const char *nl = memchr(args, '\n', len);
  if (!nl) return err_str("jaccard takes two lines of text: a, a newline, then b");
  enum { MAX = 256 };
  word a[MAX], b[MAX];
  size_t na = words(args, (size_t)(nl - args), a, MAX), nb = words(nl + 1, len - (size_t)(nl - args) - 1, b, MAX);
  size_t both = 0;
  for (size_t i = 0; i < na; i++)
    for (size_t j = 0; j < nb; j++)
      if (a[i].n == b[j].n && memcmp(a[i].p, b[j].p, a[i].n) == 0) { both++; break; }
  size_t any = na + nb - both;
  uint32_t milli = any ? (uint32_t)((both * 1000 + any / 2) / any) : 1000;
  char out[8] = { (char)('0' + milli / 1000), '.', (char)('0' + milli / 100 % 10), (char)('0' + milli / 10 % 10), (char)('0' + milli % 10) };
  return ok_text(out, 5);
}

static ret4 *fnv1a(const uint8_t *p, size_t n) {
  uint32_t h = 0x811c9dc5u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x01000193u;
  char out[8];
  for (int i = 0; i < 8; i++) out[i] = "0123456789abcdef"[(h >> (28 - 4 * i)) & 15];
  return ok_text(out, 8);
}

// ---- count: read-modify-write of one KV key (the call is one transaction) ----
static ret4 *count(const char *key, size_t len) {
  if (len == 0) return err_str("count takes a key");
  ret4 r;
  host_kv_get(key, len, &r);
  if (r.tag) { RET.tag = 1; RET.a = r.a; RET.b = r.b; return &RET; }  // the host's message, passed on
  uint64_t n = 0;
  if (r.a & 0xff) {
    const char *v = (const char *)r.b;
    for (uint32_t i = 0; i < r.c && v[i] >= '0' && v[i] <= '9'; i++) n = n * 10 + (uint64_t)(v[i] - '0');
    free((void *)r.b);
  }
  char out[24];
  size_t on = fmt_uint(out, n + 1);
  host_kv_set(key, len, out, on, &r);
  if (r.tag) { RET.tag = 1; RET.a = r.a; RET.b = r.b; return &RET; }
  return ok_text(out, on);
}

// ---- compare: composes with the text plugin through `run` ----
static ret4 *compare(const char *args, size_t len) {
  ret4 *j = jaccard(args, len);
  if (j->tag) return j;  // not two lines: jaccard's err says so
  char mine[5];
  memcpy(mine, (const char *)j->a, 5);
  free((void *)j->a);
  ret4 r;
  host_run(S("text"), 1, S("similarity"), (const uint8_t *)args, len, &r);
  if (r.tag) { RET.tag = 1; RET.a = r.a; RET.b = r.b; return &RET; }  // run's err (refused, or text's own), passed on
  static const char a[] = "jaccard ", b[] = ", levenshtein ";
  size_t n = sizeof a - 1 + 5 + sizeof b - 1 + r.b;
  char *out = malloc(n);
  memcpy(out, a, sizeof a - 1);
  memcpy(out + sizeof a - 1, mine, 5);
  memcpy(out + sizeof a - 1 + 5, b, sizeof b - 1);
  memcpy(out + sizeof a - 1 + 5 + sizeof b - 1, (const char *)r.a, r.b);
  free((void *)r.a);
  RET.tag = 0; RET.a = (uint32_t)out; RET.b = n;
  return &RET;
}

// one call of a function: the result's bytes (ok or err) are malloc'd, for the post-return to free
static ret4 *run(int32_t has_name, const char *name, size_t name_len, const uint8_t *args, size_t args_len) {
  if (!has_name || is(name, name_len, "jaccard")) return jaccard((const char *)args, args_len);
  if (is(name, name_len, "fnv1a")) return fnv1a(args, args_len);
  if (is(name, name_len, "count")) return count((const char *)args, args_len);
  if (is(name, name_len, "compare")) return compare((const char *)args, args_len);
  return err_str("no such function; try jaccard, fnv1a, count or compare");
}

EXPORT("invoke")
ret4 *invoke(int32_t has_name, char *name, size_t name_len, uint8_t *args, size_t args_len) {
  ret4 *r = run(has_name, name, name_len, args, args_len);
  free_name(has_name, name, name_len);
  free(args);
  return r;
}

EXPORT("cabi_post_invoke")
void post_invoke(ret4 *r) { free((void *)r->a); }

// ---- invoke-batch: many rows of one function in one entry, one result per row, in row order ----
// Every function works here, count too: the entry is one KV transaction, committed when it
// returns, so a row's err does not undo the other rows' counts.
typedef struct { uint8_t *p; uint32_t n; } row;                  // list<u8>: ptr, len (8 bytes)
typedef struct { uint8_t tag; uint32_t p, n; } row_result;       // result<list<u8>, string>: 12 bytes, align 4
_Static_assert(sizeof(row) == 8 && sizeof(row_result) == 12, "canonical ABI element sizes");
static uint32_t BATCH_RET[2];                                    // list<row_result>: ptr, count

EXPORT("invoke-batch")
uint32_t *invoke_batch(int32_t has_name, char *name, size_t name_len, row *rows, size_t n) {
  row_result *out = malloc(n ? n * sizeof *out : 1);
  for (size_t i = 0; i < n; i++) {
    ret4 *r = run(has_name, name, name_len, rows[i].p, rows[i].n);
    out[i] = (row_result){ r->tag, r->a, r->b };
    free(rows[i].p);
  }
  free_name(has_name, name, name_len);
  free(rows);
  BATCH_RET[0] = (uint32_t)out; BATCH_RET[1] = n;  // exactly one result per row
  return BATCH_RET;
}

EXPORT("cabi_post_invoke-batch")
void post_invoke_batch(uint32_t *ret) {
  row_result *out = (row_result *)ret[0];
  for (uint32_t i = 0; i < ret[1]; i++) free((void *)out[i].p);
  free(out);
}

// ---- introspection: what `plughost describe` shows (static data, nothing to free) ----
typedef struct { uint8_t some; const char *p; uint32_t n; } opt_str;
typedef struct { const char *a; uint32_t an; const char *b; uint32_t bn; } str_pair;

static const opt_str FUNCTIONS[] = { { 0, 0, 0 }, { 1, S("jaccard") }, { 1, S("fnv1a") }, { 1, S("count") }, { 1, S("compare") } };
static const str_pair TWO_LINES[] = { { S("a"), S("string (first line)") }, { S("b"), S("string (second line)") } };
static const str_pair ANY_BYTES[] = { { S("data"), S("bytes") } };
static const str_pair KEY[] = { { S("key"), S("string") } };

// 0 = jaccard (the default), 1 = fnv1a, 2 = count, 3 = compare, -1 = unknown
static int which(int32_t has_name, char *name, size_t len) {
  int f = !has_name ? 0 : is(name, len, "jaccard") ? 0 : is(name, len, "fnv1a") ? 1 : is(name, len, "count") ? 2 : is(name, len, "compare") ? 3 : -1;
  free_name(has_name, name, len);
  return f;
}
static ret4 *no_such(void) { static const char m[] = "no such function"; RET.tag = 1; RET.a = (uint32_t)m; RET.b = sizeof m - 1; return &RET; }

EXPORT("list-functions")
uint32_t *list_functions(void) {
  static uint32_t list[2];
  list[0] = (uint32_t)FUNCTIONS; list[1] = sizeof FUNCTIONS / sizeof FUNCTIONS[0];
  return list;
}

EXPORT("function-args")
ret4 *function_args(int32_t has_name, char *name, size_t len) {
  int f = which(has_name, name, len);
  if (f < 0) return no_such();
  RET.tag = 0;
  RET.a = (uint32_t)(f == 0 || f == 3 ? TWO_LINES : f == 1 ? ANY_BYTES : KEY);
  RET.b = f == 0 || f == 3 ? 2 : 1;
  return &RET;
}

EXPORT("function-returns")
ret4 *function_returns(int32_t has_name, char *name, size_t len) {
  static const char sim[] = "decimal text 0..1", hex[] = "8 hex digits", num[] = "decimal text", both[] = "text: jaccard <0..1>, levenshtein <0..1>";
  int f = which(has_name, name, len);
  if (f < 0) return no_such();
  const char *s = f == 0 ? sim : f == 1 ? hex : f == 2 ? num : both;
  RET.tag = 0; RET.a = (uint32_t)s; RET.b = strlen(s);
  return &RET;
}

EXPORT("function-writeable")
ret4 *function_writeable(int32_t has_name, char *name, size_t len) {
  int f = which(has_name, name, len);
  if (f < 0) return no_such();
  RET.tag = 0; RET.a = f == 2;  // the bool is the byte at offset 4
  return &RET;
}

EXPORT("function-comment")
ret4 *function_comment(int32_t has_name, char *name, size_t len) {
  static const char *const text[] = {
    "Jaccard similarity of the word sets of two lines of text, with 3 decimals",
    "32-bit FNV-1a hash of the args, as 8 hex digits",
    "adds one to a key's counter, kept per tenant in plughost's KV",
    "Jaccard similarity here and the text plugin's Levenshtein similarity (through run), of two lines",
  };
  int f = which(has_name, name, len);
  if (f < 0) return no_such();
  RET.tag = 0; RET.a = 1; RET.b = (uint32_t)text[f]; RET.c = strlen(text[f]);
  return &RET;
}

// result<_, string>: runs once per new controller, before its first call; nothing to set up here
EXPORT("init")
ret4 *init(void) { RET.tag = 0; return &RET; }
