#!/usr/bin/env bash
# Builds the guest extensions for wasm32-wasip2 (the examples under examples/, and the hostile
# test fixtures under tests/guests/) and puts each component next to its extension.toml as
# extension.wasm, ready for `warden pack`; then the process extensions under examples/process/
# as native executables, each copied next to its extension.toml under its folder's name (its
# entry). All three workspaces share one target dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for ws in examples tests/guests; do
  cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$root/$ws/Cargo.toml" --target-dir "$root/target"
  for dir in "$root/$ws"/*/; do
    name=$(basename "$dir")
    wasm="$root/target/wasm32-wasip2/release/${name//-/_}.wasm"
    if [ -f "$dir/extension.toml" ] && [ -f "$wasm" ]; then
      cp "$wasm" "$dir/extension.wasm"
    fi
  done
done
# Process extensions run in an empty root (no libc, no loader), so they are linked statically.
# The flags go to this one cargo run for this one target, so the host workspace's builds (and
# build scripts here, compiled for the host) keep theirs.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --release --target x86_64-unknown-linux-gnu \
  --manifest-path "$root/examples/process/Cargo.toml" --target-dir "$root/target"
for dir in "$root/examples/process"/*/; do
  name=$(basename "$dir")
  bin="$root/target/x86_64-unknown-linux-gnu/release/$name"
  if [ -f "$dir/extension.toml" ] && [ -f "$bin" ]; then
    cp "$bin" "$dir/$name"
  fi
done
