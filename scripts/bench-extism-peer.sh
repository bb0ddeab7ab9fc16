#!/usr/bin/env bash
# Issue 15: the same Extism plug-in (examples/extism/count-vowels) run by Extism's own host (the
# `extism` crate 1.30.0) and by warden, in one process (benches/extism-peer):
#
#   1. equality on allowed work (count_vowels and greet on empty, ASCII, UTF-8 and 64 KiB
#      inputs, the config key `vowels` set and unset, and `fail`): a table; exits non-zero on
#      any difference;
#   2. per-call cost, interleaved in blocks whose order rotates: Extism with a fresh Plugin per
#      call (from a CompiledPlugin), Extism reusing one Plugin (state persists), warden's
#      Tenant::call (fresh instance per call, audit in memory); p50/p90/p99/mean and ratios.
#
#   scripts/bench-extism-peer.sh
#   WARDEN_BENCH_CALLS=5000 scripts/bench-extism-peer.sh
#
# benches/extism-peer is its own workspace (two Wasmtimes: warden's and extism's), so the warden
# workspace keeps one. Built in release in benches/extism-peer/target, or in
# $CARGO_TARGET_DIR/extism-peer when CARGO_TARGET_DIR is set; the first build compiles both
# Wasmtimes (15-25 minutes on 2 cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { echo "bench-extism-peer: $*" >&2; }

# The plug-in: build the examples only when it is missing (that builds every example).
if [ ! -f examples/extism/count-vowels/extension.wasm ]; then
  say "examples/extism/count-vowels/extension.wasm is missing: running scripts/build-examples.sh"
  bash scripts/build-examples.sh
fi

# A target dir of its own: its dependency versions and profile differ from the workspace's, so
# sharing ./target would only rebuild things back and forth.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  case $CARGO_TARGET_DIR in /*) tdir=$CARGO_TARGET_DIR ;; *) tdir=$root/$CARGO_TARGET_DIR ;; esac
  tdir=$tdir/extism-peer
else
  tdir=$root/benches/extism-peer/target
fi
manifest=$root/benches/extism-peer/Cargo.toml
say "building benches/extism-peer (release, target $tdir)"
# Not --locked: the warden crates are path dependencies and may gain dependencies; the lock
# keeps every version already in it (extism's and Wasmtime's) and only adds new ones.
CARGO_TARGET_DIR=$tdir cargo build --release --manifest-path "$manifest"

# The measuring run: the binary directly, so cargo's own work is not on the CPU meanwhile.
"$tdir/release/extism-peer"
