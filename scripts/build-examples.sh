#!/usr/bin/env bash
# Builds the guest extensions for wasm32-wasip2 (the examples under examples/, and the hostile
# test fixtures under tests/guests/) and puts each component next to its extension.toml as
# extension.wasm, ready for `warden pack`. Both workspaces share one target dir.
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
