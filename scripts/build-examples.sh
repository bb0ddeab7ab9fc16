#!/usr/bin/env bash
# Builds the guest extensions under examples/ for wasm32-wasip2 and puts each component next to
# its extension.toml as extension.wasm, ready for `warden pack`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --target wasm32-wasip2 \
  --manifest-path "$root/examples/Cargo.toml" --target-dir "$root/target"
for dir in "$root"/examples/*/; do
  name=$(basename "$dir")
  wasm="$root/target/wasm32-wasip2/release/${name//-/_}.wasm"
  if [ -f "$dir/extension.toml" ] && [ -f "$wasm" ]; then
    cp "$wasm" "$dir/extension.wasm"
  fi
done
