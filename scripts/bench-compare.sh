#!/usr/bin/env bash
# The call benchmark of an earlier commit and of the working tree, run alternately on this
# machine so both see the same noise: scripts/bench-compare.sh REV [ROUNDS]
# Each round runs both `call` benchmarks (`crates/host/benches/call.rs`) once, old first on
# odd rounds and new first on even ones, and prints their p50 lines and ratios to raw Wasmtime.
# The old commit is checked out in a temporary worktree that shares this target dir, so
# Wasmtime (same version, features and profile) is compiled once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:?usage: scripts/bench-compare.sh REV [ROUNDS]}
rounds=${2:-6}
cd "$root"
bash scripts/build-examples.sh
old=$(mktemp -d)/old
git worktree add --quiet --detach "$old" "$rev"
trap 'git worktree remove --force "$old"' EXIT
# Guests are not committed: the old tree gets the same components.
for d in examples/*/; do
  [ -f "$d/extension.wasm" ] && [ -d "$old/$d" ] && cp "$d/extension.wasm" "$old/$d/"
done
bench_bin() { # DIR -> path of its built call benchmark
  (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench --quiet -p warden-host --bench call --no-run \
    --message-format=json 2>/dev/null) |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except ValueError: continue
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="call" and m.get("executable"): print(m["executable"])' | tail -1
}
old_bin=$(bench_bin "$old")
cp "$old_bin" "$root/target/bench-call-old"
new_bin=$(bench_bin "$root")
run() { (cd "$2" && "$1" | grep -E "InstancePre|mem audit|ratio p50" | sed "s/^/$3 /"); }
for i in $(seq 1 "$rounds"); do
  if [ $((i % 2)) -eq 1 ]; then
    run "$root/target/bench-call-old" "$old/crates/host" old; run "$new_bin" "$root/crates/host" new
  else
    run "$new_bin" "$root/crates/host" new; run "$root/target/bench-call-old" "$old/crates/host" old
  fi
done
