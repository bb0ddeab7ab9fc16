#!/usr/bin/env bash
# An API fuzzer run against `warden serve`: schemathesis (from PyPI, in a venv cached under
# target/tools) reads the service's own OpenAPI document (GET /openapi.json) and sends what it
# generates from it to the runner and admin APIs, with both tokens. Fails on any finding: a 5xx
# other than the mapped 502 (extension fault, integrity) and 504 (time limit), a status the
# document does not list, a content type or a body that does not match the document, or a
# panic in the service's log. Afterwards the audit chain must still verify.
#
# The service runs on a free loopback port with a temporary data dir, a trust file of a fresh
# key, and the echo example published and installed (through the admin API) for the tenant
# `demo`, so the runner API has something to call.
#
# Environment:
#   WARDEN_FUZZ_SECONDS   schemathesis's time budget (default 45; the run stops after it)
#   WARDEN_FUZZ_EXAMPLES  test cases per operation and round (default 40)
#   WARDEN_FUZZ_SEED      a seed, to repeat a run
#   WARDEN_ADMIN_TOKEN / WARDEN_RUNNER_TOKEN   the tokens (default: random, 64 hex digits)
#   CARGO_TARGET_DIR      where `warden` is built (default ./target), as for the tests
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$SECONDS

# schemathesis, pinned, in its own venv (kept across runs).
st_version=4.32.5
venv="$root/target/tools/schemathesis-$st_version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  rm -rf "$venv"
  mkdir -p "$root/target/tools"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version"
fi

# The echo example's component (build-examples.sh builds every guest once).
if [ ! -f examples/echo/extension.wasm ]; then
  bash scripts/build-examples.sh
fi
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --bin warden
warden="$target/debug/warden"

work=$(mktemp -d)
chmod 700 "$work"
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

token() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export WARDEN_ADMIN_TOKEN=${WARDEN_ADMIN_TOKEN:-$(token)}
export WARDEN_RUNNER_TOKEN=${WARDEN_RUNNER_TOKEN:-$(token)}
for t in "$WARDEN_ADMIN_TOKEN" "$WARDEN_RUNNER_TOKEN"; do
  if [ ${#t} -lt 32 ]; then
    echo "fuzz-api: WARDEN_ADMIN_TOKEN and WARDEN_RUNNER_TOKEN must be at least 32 characters" >&2
    exit 2
  fi
done

# A publisher key and the trust file that trusts it; the echo bundle, signed (as run.sh).
"$warden" keygen --publisher warden-examples --out "$work/keys" > "$work/trust.toml" 2> /dev/null
"$warden" pack examples/echo --out "$work/echo.wext" > /dev/null
"$warden" sign "$work/echo.wext" --key "$work/keys/warden-examples.key" > /dev/null

"$warden" serve --data "$work/data" --trust "$work/trust.toml" --listen 127.0.0.1:0 \
  > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
base=
for _ in $(seq 1 300); do
  base=$(sed -n 's/^warden serve listening on //p' "$work/serve.out")
  [ -n "$base" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "fuzz-api: warden serve did not start:" >&2
    cat "$work/serve.err" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "fuzz-api: warden serve did not say where it listens" >&2
  exit 1
fi

# The tenant, the publication and the install, through the admin API.
admin=(-H "Authorization: Bearer $WARDEN_ADMIN_TOKEN")
curl -sS --fail-with-body "${admin[@]}" -H 'content-type: application/json' \
  -d '{"name":"demo"}' "$base/v1/admin/tenants" > /dev/null
hash=$(curl -sS --fail-with-body "${admin[@]}" -F "bundle=@$work/echo.wext" \
  -F "signature=@$work/echo.wext.sig" "$base/v1/admin/bundles" | jq -r .content_hash)
curl -sS --fail-with-body "${admin[@]}" -X PUT -H 'content-type: application/json' \
  -d "{\"content_hash\":\"$hash\",\"grant\":\"none\"}" \
  "$base/v1/admin/tenants/demo/installs/warden.echo" > /dev/null
out=$(curl -sS --fail-with-body -H "Authorization: Bearer $WARDEN_RUNNER_TOKEN" \
  -d '{"tenant":"demo","extension":"warden.echo","method":"greet","input":{"name":"fuzz"}}' \
  "$base/v1/execute")
if [ "$(jq -r .output.greeting <<<"$out")" != "Hello, fuzz!" ]; then
  echo "fuzz-api: the runner API did not call echo: $out" >&2
  exit 1
fi

# Each token for its security scheme; 502 and 504 are the mapped extension faults and time
# limits, any other 5xx is a finding.
cat > "$work/schemathesis.toml" <<'TOML'
[auth.openapi.admin_token]
bearer = "${WARDEN_ADMIN_TOKEN}"

[auth.openapi.runner_token]
bearer = "${WARDEN_RUNNER_TOKEN}"

[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "502", "504"]

# Nothing kept between runs (nor written into the work tree).
[cache]
enabled = false
TOML
checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_schema_conformance,response_headers_conformance
checks+=,negative_data_rejection,ignored_auth
seconds=${WARDEN_FUZZ_SECONDS:-45}
seed=()
if [ -n "${WARDEN_FUZZ_SEED:-}" ]; then
  seed=(--seed "$WARDEN_FUZZ_SEED")
fi
status=0
(cd "$work" && timeout --kill-after=5 $((seconds + 30)) \
  "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --checks "$checks" \
  --max-examples "${WARDEN_FUZZ_EXAMPLES:-40}" --max-time "$seconds" "${seed[@]}" \
  --workers 2 --request-timeout 10 --generation-database none \
  --no-color --warnings off) || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "fuzz-api: schemathesis did not finish within $((seconds + 30)) s" >&2
fi

# What the run reached: answers by route and status, calls by outcome.
curl -sS "${admin[@]}" "$base/metrics" 2>/dev/null \
  | sed -n 's/^warden_\(http_requests_total\|calls_total\)//p' | tr '\n' ' ' | fold -s -w 100 || true
echo

# The service must have survived it, without a panic, and its audit chain must still hold.
if ! kill -0 "$pid" 2>/dev/null; then
  echo "fuzz-api: warden serve died during the run:" >&2
  tail -n 50 "$work/serve.err" >&2
  status=1
else
  kill -TERM "$pid"
  wait "$pid" || true
fi
pid=
if grep -q 'panicked' "$work/serve.err"; then
  echo "fuzz-api: warden serve panicked:" >&2
  grep -A5 'panicked' "$work/serve.err" >&2
  status=1
fi
if ! "$warden" audit --data "$work/data" --verify > "$work/audit.out" 2>&1; then
  echo "fuzz-api: the audit chain does not verify after the run:" >&2
  cat "$work/audit.out" >&2
  status=1
fi
echo "fuzz-api: $((SECONDS - started)) s, exit $status"
exit "$status"
