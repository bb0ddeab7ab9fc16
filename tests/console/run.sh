#!/usr/bin/env bash
# The operator console's end-to-end tests: headless Chromium (Debian's `chromium`, driven by
# playwright-core; Playwright's own browsers are never downloaded) against the real `warden
# serve` on a free loopback port with a temporary data dir. Screenshots of each view go to
# target/test-output/console/.
#
#   bash tests/console/run.sh
#
# playwright-core and axe-core are pinned by package-lock.json next to this script and
# installed once per lock (`npm ci`, no install scripts run) under $WARDEN_TOOLS (default
# target/tools). The service is stopped and the temporary folder removed whatever happens;
# any failed check exits non-zero. WARDEN_CHROMIUM names another Chromium binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The browser, from Debian's packages.
chromium=${WARDEN_CHROMIUM:-$(command -v chromium || true)}
if [ -z "$chromium" ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  chromium=$(command -v chromium)
fi
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "console tests: Node.js 20+ with npm is needed (scripts/setup.sh installs it)" >&2; exit 1; }

# The test's npm packages: one install per lock, under a lock, marked complete last (an
# interrupted install is made again), as sdk/js/build.sh does for componentize-js.
lock_id=$(sha256sum "$here/package-lock.json" | cut -c1-16)
tools=${WARDEN_TOOLS:-$root/target/tools}/console-$lock_id
mkdir -p "$(dirname "$tools")"
exec 9>"$tools.lock"
flock 9
if [ ! -f "$tools/.complete" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  touch "$tools/.complete"
fi
flock -u 9
exec 9>&-

# The binary, as the cargo tests build it (same target dir and profile), and the guests the
# tests install: examples echo and fetcher, and the hostile fixture (its `fail` method puts
# attacker-chosen text into an audit record), built as scripts/build-examples.sh builds them
# (nothing to do after it).
cargo build --quiet --bin warden
warden=${CARGO_TARGET_DIR:-$root/target}/debug/warden
for ws in examples tests/guests; do
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$ws/Cargo.toml" \
    --target-dir "$root/target"
done
wasm=$root/target/wasm32-wasip2/release

work=$(mktemp -d /tmp/warden-console.XXXXXX)
chmod 700 "$work"
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Signed bundles: each extension folder copied with its component next to its manifest.
# fetcher 0.2.0 is fetcher 0.1.0 asking for one more host and a higher response limit (the
# upgrade the review must show); echo 0.0.9 is a lower version of echo (a rollback).
"$warden" keygen --publisher warden-examples --out "$work/keys" >"$work/trust.toml" 2>>"$work/setup.log" ||
  { cat "$work/setup.log" >&2; exit 1; }
# A second key of the publisher's, revoked, for the trust view to show.
"$warden" keygen --publisher warden-examples --out "$work/old-keys" >"$work/old.toml" 2>>"$work/setup.log" ||
  { cat "$work/setup.log" >&2; exit 1; }
revoked=$(sed -n 's/^keys = //p' "$work/old.toml") \
  awk '$0 == "revoked = []" { print "revoked = " ENVIRON["revoked"]; next } { print }' \
  "$work/trust.toml" >"$work/trust.new"
mv "$work/trust.new" "$work/trust.toml"
grep -q '^revoked = \["-----BEGIN' "$work/trust.toml" ||
  { echo "console tests: the revoked key was not added to the trust file" >&2; exit 1; }
bundle() { # NAME SOURCE_DIR WASM
  mkdir -p "$work/src/$1"
  cp "$2/extension.toml" "$work/src/$1/"
  cp "$3" "$work/src/$1/extension.wasm"
}
bundle echo examples/echo "$wasm/echo.wasm"
bundle echo-0.0.9 examples/echo "$wasm/echo.wasm"
sed -i 's/^version = "0.1.0"/version = "0.0.9"/' "$work/src/echo-0.0.9/extension.toml"
bundle fetcher examples/fetcher "$wasm/fetcher.wasm"
bundle fetcher-0.2.0 examples/fetcher "$wasm/fetcher.wasm"
sed -i -e 's/^version = "0.1.0"/version = "0.2.0"/' \
  -e 's|^allowed_hosts = \[\(.*\)\]|allowed_hosts = [\1, "https://api.new-host.test"]|' \
  -e 's/^max_response_bytes = "128KiB"/max_response_bytes = "256KiB"/' \
  "$work/src/fetcher-0.2.0/extension.toml"
grep -q 'api.new-host.test' "$work/src/fetcher-0.2.0/extension.toml" &&
  grep -q '256KiB' "$work/src/fetcher-0.2.0/extension.toml" ||
  { echo "console tests: fetcher 0.2.0's manifest was not made" >&2; exit 1; }
bundle hostile tests/guests/hostile "$wasm/hostile.wasm"
mkdir -p "$work/bundles"
for b in echo echo-0.0.9 fetcher fetcher-0.2.0 hostile; do
  "$warden" pack "$work/src/$b" --out "$work/bundles/$b.wext" >>"$work/setup.log" 2>&1 ||
    { cat "$work/setup.log" >&2; exit 1; }
  "$warden" sign "$work/bundles/$b.wext" --key "$work/keys/warden-examples.key" >>"$work/setup.log" 2>&1 ||
    { cat "$work/setup.log" >&2; exit 1; }
done

# The service: tokens in files only the operator reads, a free loopback port.
(umask 077
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/admin.token"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/runner.token")
: >"$work/serve.out"
WARDEN_LOG=warn "$warden" serve --listen 127.0.0.1:0 --data "$work/data" \
  --trust "$work/trust.toml" --admin-token-file "$work/admin.token" \
  --runner-token-file "$work/runner.token" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
base=
for _ in $(seq 1 600); do
  base=$(sed -n 's/^warden serve listening on //p' "$work/serve.out" | head -n 1)
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "console tests: warden serve did not start" >&2
  cat "$work/serve.err" >&2
  exit 1
fi
for _ in $(seq 1 300); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

out=$root/target/test-output/console
mkdir -p "$out"
rm -f "$out"/*.png
status=0
WARDEN_URL=$base WARDEN_ADMIN_TOKEN_FILE=$work/admin.token \
  WARDEN_RUNNER_TOKEN_FILE=$work/runner.token WARDEN_BUNDLES=$work/bundles \
  CONSOLE_TOOLS=$tools CONSOLE_CHROMIUM=$chromium CONSOLE_SHOTS=$out \
  node "$here/e2e.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "console tests: the service's log (stderr):" >&2
  tail -n 40 "$work/serve.err" >&2 || true
fi
exit "$status"
