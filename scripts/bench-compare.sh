#!/usr/bin/env bash
# The call benchmark of two commits, run alternately on this machine so both see the same
# noise: scripts/bench-compare.sh OLD [NEW] [ROUNDS]   (NEW defaults to HEAD)
# Each round runs both `call` benchmarks (`crates/host/benches/call.rs`) once, old first on
# odd rounds and new first on even ones, and prints their p50 lines and ratios to raw Wasmtime.
# Both commits are checked out in temporary worktrees that share this target dir, so Wasmtime
# (same version, features and profile) is compiled once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old_rev=${1:?usage: scripts/bench-compare.sh OLD [NEW] [ROUNDS]}
new_rev=${2:-HEAD}
rounds=${3:-6}
cd "$root"
bash scripts/build-examples.sh
work=$(mktemp -d)
cleanup() {
  git worktree remove --force "$work/old" 2>/dev/null || true
  git worktree remove --force "$work/new" 2>/dev/null || true
}
trap cleanup EXIT
bench_bin() { # WORKTREE -> path of its built call benchmark
  (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench --quiet -p warden-host --bench call \
    --no-run --message-format=json 2>/dev/null) |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except ValueError: continue
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="call" and m.get("executable"): print(m["executable"])' | tail -1
}
for side in old new; do
  rev=$old_rev; [ "$side" = new ] && rev=$new_rev
  git worktree add --quiet --detach "$work/$side" "$rev"
  # Guests are not committed: both trees get the same components.
  for d in examples/*/; do
    if [ -f "$d/extension.wasm" ] && [ -d "$work/$side/$d" ]; then cp "$d/extension.wasm" "$work/$side/$d/"; fi
  done
  bin=$(bench_bin "$work/$side")
  [ -n "$bin" ] || { echo "bench-compare: building the $side benchmark ($rev) failed" >&2; exit 1; }
  cp "$bin" "$work/bench-$side"
done
# Cargo may take one tree's artifacts for the other's when they share a target dir: identical
# binaries mean the comparison would measure one commit twice.
if cmp -s "$work/bench-old" "$work/bench-new"; then
  echo "bench-compare: both benchmarks are the same binary; run with CARGO_TARGET_DIR unset after a clean" >&2
  exit 1
fi
run() { "$work/bench-$1" | grep -E "InstancePre|mem audit|ratio p50" | sed "s/^/$1 /"; }
for i in $(seq 1 "$rounds"); do
  if [ $((i % 2)) -eq 1 ]; then run old; run new; else run new; run old; fi
done
