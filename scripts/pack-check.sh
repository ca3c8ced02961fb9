#!/usr/bin/env bash
# The package as a user gets it: `npm pack` (which builds dist/ through `prepare`), the
# tarball installed into an empty project (its dependencies from the registry, none of the
# devDependencies: no tsx, no TypeScript), then, there:
#   - `plughost serve` on a port the OS picks, until grpc.health.v1 says SERVING, having
#     pushed the example plugins (from the package's examples/) on its first start;
#   - `plughost push` of an example plugin under a name of its own, one `plughost invoke`;
#   - the library entry ('plughost', 'plughost/service'): imported, one call through
#     RuntimeManager, and a consumer's TypeScript type-checked against its declarations;
#   - SIGTERM: the server stops cleanly.
# Exits non-zero with a line saying what failed; the whole run is bounded
# (PACK_CHECK_TIMEOUT seconds, default 120) and leaves no process or temp dir behind.
#
#   bash scripts/pack-check.sh
set -euo pipefail

LIMIT=${PACK_CHECK_TIMEOUT:-120}
if [ -z "${PACK_CHECK_INNER:-}" ]; then
  # timeout signals the whole process group (npm, the server, node one-liners), then kills it
  status=0
  PACK_CHECK_INNER=1 timeout --kill-after=15 "$LIMIT" bash "$0" "$@" || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then echo "pack-check: FAILED: did not finish within ${LIMIT} s" >&2; fi
  exit "$status"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/plughost-pack-check.XXXXXX")
SERVER_PID=

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step() { printf 'pack-check: %s\n' "$*"; }
fail() {
  printf 'pack-check: FAILED: %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "--- $(basename "$2") (last 40 lines)" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}

step "npm pack (builds dist/ through prepare)"
(cd "$ROOT" && npm pack --pack-destination "$WORK" >"$WORK/pack.log" 2>&1) || fail "npm pack" "$WORK/pack.log"
TGZ=$(ls "$WORK"/*.tgz 2>/dev/null | head -n 1)
[ -n "$TGZ" ] || fail "npm pack made no tarball" "$WORK/pack.log"
tar -tzf "$TGZ" >"$WORK/contents.txt"
for f in package/bin/plughost.js package/dist/src/cli/main.js package/dist/src/index.js package/dist/src/index.d.ts \
  package/dist/src/runtime/worker/entry.js package/dist/src/component/transpile-worker.js package/wit/plugin.wit \
  package/examples/text-as/plugin.wasm package/examples/text-as/manifest.json; do
  grep -qx "$f" "$WORK/contents.txt" || fail "the tarball lacks ${f#package/}"
done
if grep -qE '^package/(src|test|bench|node_modules)/' "$WORK/contents.txt"; then fail "the tarball holds sources or tests: $(grep -E '^package/(src|test|bench|node_modules)/' "$WORK/contents.txt" | head -n 3 | tr '\n' ' ')"; fi
step "$(basename "$TGZ"): $(wc -l <"$WORK/contents.txt") files"

APP="$WORK/app"
mkdir -p "$APP"
printf '{ "name": "plughost-pack-check", "version": "0.0.0", "private": true, "type": "module" }\n' >"$APP/package.json"
step "npm install of the tarball into an empty project"
(cd "$APP" && npm install --no-audit --no-fund "$TGZ" >"$WORK/install.log" 2>&1) || fail "npm install $(basename "$TGZ")" "$WORK/install.log"
[ -x "$APP/node_modules/.bin/plughost" ] || fail "node_modules/.bin/plughost is missing after the install"
for dev in tsx typescript ava; do
  [ ! -e "$APP/node_modules/$dev" ] || fail "the installed package pulled in the devDependency $dev"
done

PH="$APP/node_modules/.bin/plughost"
PKG="$APP/node_modules/plughost"
cd "$APP"

step "plughost serve"
PLUGHOST_METRICS__LISTEN='' PLUGHOST_WORKERS=2 PLUGHOST_LOG__LEVEL=warn \
  "$PH" serve --listen 127.0.0.1:0 --data "$WORK/data" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
ADDRESS=
for _ in $(seq 1 300); do
  ADDRESS=$(sed -n 's/^plughost listening on \([^ ]*\) .*/\1/p' "$WORK/serve.err" | head -n 1)
  [ -n "$ADDRESS" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "plughost serve exited before listening" "$WORK/serve.err"
  sleep 0.1
done
[ -n "$ADDRESS" ] || fail "plughost serve did not say where it listens within 30 s" "$WORK/serve.err"
# the admin token is printed right after the listening line, on a first start
TOKEN=
for _ in $(seq 1 50); do
  TOKEN=$(grep -oE 'ph_[A-Za-z0-9_-]+' "$WORK/serve.err" | head -n 1 || true)
  [ -n "$TOKEN" ] && break
  sleep 0.1
done
[ -n "$TOKEN" ] || fail "plughost serve printed no admin token on its first start" "$WORK/serve.err"
step "listening on $ADDRESS"

# grpc.health.v1 with the grpc-js and grpc-health-check the package itself depends on
cat >"$WORK/health.cjs" <<'JS'
const { createRequire } = require('node:module');
const req = createRequire(process.argv[2] + '/package.json');
const grpc = req('@grpc/grpc-js');
const { service } = req('grpc-health-check');
const Health = grpc.makeGenericClientConstructor(service, 'Health');
const client = new Health(process.argv[3], grpc.credentials.createInsecure());
client.check({ service: 'plughost.v1.PluginService' }, { deadline: Date.now() + 2000 }, (err, res) => {
  client.close();
  if (err) console.log(`error: ${err.message}`);
  else console.log(res.status);
  process.exit(!err && res.status === 'SERVING' ? 0 : 1);
});
JS
HEALTH=
for _ in $(seq 1 30); do
  HEALTH=$(node "$WORK/health.cjs" "$PKG" "$ADDRESS" 2>&1) && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "plughost serve exited" "$WORK/serve.err"
  sleep 0.5
done
[ "$HEALTH" = SERVING ] || fail "grpc.health.v1 Check of plughost.v1.PluginService did not answer SERVING: $HEALTH" "$WORK/serve.err"
step "health: $HEALTH"
# the examples are pushed after the server listens (it serves meanwhile)
for ex in stats text; do
  for _ in $(seq 1 300); do
    grep -q "^example plugin pushed: $ex@" "$WORK/serve.err" && break
    sleep 0.1
  done
  grep -q "^example plugin pushed: $ex@" "$WORK/serve.err" || fail "the first start did not push the example plugin $ex within 30 s" "$WORK/serve.err"
done
step "example plugins pushed on the first start: stats, text"

export PLUGHOST_ADDRESS="$ADDRESS" PLUGHOST_TOKEN="$TOKEN"
OUT=$("$PH" push "$PKG/examples/text-as/plugin.wasm" --name pack-check --version 1.0.0 --timeout 30000 2>&1) || fail "plughost push: $OUT" "$WORK/serve.err"
case "$OUT" in "pushed pack-check@1.0.0 sha256:"*) ;; *) fail "plughost push said: $OUT" ;; esac
step "$OUT"
OUT=$(printf 'kitten\nsitting' | "$PH" invoke pack-check similarity --args - --timeout 30000 2>&1) || fail "plughost invoke: $OUT" "$WORK/serve.err"
[ "$OUT" = 0.571 ] || fail "plughost invoke pack-check similarity of kitten/sitting gave '$OUT', not 0.571"
step "invoke pack-check similarity kitten/sitting: $OUT"

step "SIGTERM"
kill -TERM "$SERVER_PID"
code=0
wait "$SERVER_PID" || code=$?
SERVER_PID=
[ "$code" -eq 0 ] || fail "plughost serve exited with $code after SIGTERM" "$WORK/serve.err"
grep -q 'plughost stopped' "$WORK/serve.err" || fail "plughost serve did not say it stopped" "$WORK/serve.err"

step "library entry: import 'plughost' and 'plughost/service', one call through RuntimeManager"
cat >"$APP/library.mjs" <<'JS'
import { readFileSync } from 'node:fs';
import { LmdbKvStore, PlughostError, RuntimeManager } from 'plughost';
import { Plughost } from 'plughost/service';
if (typeof Plughost.start !== 'function' || typeof PlughostError !== 'function') throw new Error('plughost/service or PlughostError is not what it should be');
const [wasm, kvDir] = process.argv.slice(2);
const store = new LmdbKvStore({ path: kvDir });
const runtime = await RuntimeManager.create({ workers: 1, store });
try {
  const plugin = await runtime.load(readFileSync(wasm), { name: 'text' });
  const result = await plugin.invoke({ subject: 'pack-check', tenant: 'pack-check', kvAccess: 'none' }, 'similarity', new TextEncoder().encode('kitten\nsitting'));
  if (!result.ok) throw new Error(`guest error: ${result.guestError}`);
  console.log(new TextDecoder().decode(result.value));
} finally {
  await runtime.close();
  await store.close();
}
JS
OUT=$(node library.mjs "$PKG/examples/text-as/plugin.wasm" "$WORK/lib-kv" 2>&1) || fail "the library example failed: $OUT"
[ "$OUT" = 0.571 ] || fail "the library call gave '$OUT', not 0.571"

step "types: a consumer's TypeScript against the package's declarations"
cat >"$APP/consumer.ts" <<'TS'
import { LmdbKvStore, PlughostError, RuntimeManager, type InvocationContext, type InvokeResult, type KvStore } from 'plughost';
import { Plughost, type PlughostConfigInput } from 'plughost/service';
const store: KvStore = new LmdbKvStore({ path: './kv' });
const runtime: Promise<RuntimeManager> = RuntimeManager.create({ workers: 1, store });
const ctx: InvocationContext = { subject: 's', tenant: 't', kvAccess: 'read' };
export async function call(bytes: Uint8Array): Promise<string> {
  const plugin = await (await runtime).load(bytes, { name: 'p', limits: { maxExecutionMs: 500 } });
  const r: InvokeResult = await plugin.invoke(ctx, 'fn', bytes);
  if (!r.ok) throw new PlughostError('INTERNAL', r.guestError);
  return new TextDecoder().decode(r.value);
}
const config: PlughostConfigInput = { listen: '127.0.0.1:0' };
export const start = () => Plughost.start(config);
// the declarations are real, not any: a wrong call must be an error
// @ts-expect-error workers is a number
export const wrong = RuntimeManager.create({ workers: 'two' });
TS
OUT=$("$ROOT/node_modules/.bin/tsc" --noEmit --strict --target es2022 --module nodenext --moduleResolution nodenext \
  --skipLibCheck --types node --typeRoots "$ROOT/node_modules/@types" consumer.ts 2>&1) || fail "tsc on a consumer of the package: $OUT"

step "ok"
