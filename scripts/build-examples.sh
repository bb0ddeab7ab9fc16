#!/usr/bin/env bash
# Builds the guest extensions for wasm32-wasip2 (the examples under examples/, and the hostile
# test fixtures under tests/guests/) and puts each component next to its extension.toml as
# extension.wasm, ready for `warden pack`; then the Extism plug-ins (examples/extism/*,
# tests/guests/extism-hostile) for wasm32-unknown-unknown (tests/guests/extism-wasi for
# wasm32-wasip1); then the process extensions under examples/process/
# as native executables, each copied next to its extension.toml under its folder's name (its
# entry). All three workspaces share one target dir. Last, the JavaScript and Python examples
# (examples/js/*, examples/python/*, and the fixtures under tests/guests/js and
# tests/guests/python) with the SDK's pinned tools (sdk/*/build.sh), installed
# under target/tools.
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
# Extism plug-ins (kind = "extism"): core modules for wasm32-unknown-unknown, built with the
# Extism Rust PDK; the example workspace under examples/extism and the hostile fixture (a
# workspace of its own), each module copied next to its extension.toml as extension.wasm.
for ws in examples/extism tests/guests/extism-hostile; do
  cargo build --quiet --release --target wasm32-unknown-unknown \
    --manifest-path "$root/$ws/Cargo.toml" --target-dir "$root/target"
done
for dir in "$root/examples/extism"/*/ "$root/tests/guests/extism-hostile/"; do
  name=$(basename "$dir")
  wasm="$root/target/wasm32-unknown-unknown/release/${name//-/_}.wasm"
  if [ -f "$dir/extension.toml" ] && [ -f "$wasm" ]; then
    cp "$wasm" "$dir/extension.wasm"
  fi
done
# A plug-in that asks for WASI preview 1 (`[extism] wasi = true`), built for wasm32-wasip1.
cargo build --quiet --release --target wasm32-wasip1 \
  --manifest-path "$root/tests/guests/extism-wasi/Cargo.toml" --target-dir "$root/target"
cp "$root/target/wasm32-wasip1/release/extism_wasi.wasm" "$root/tests/guests/extism-wasi/extension.wasm"
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
# JavaScript and Python: each example's world gets the WIT packages it may use (warden's, the
# key-value, config and logging drafts, and WASI 0.2) in wit/deps, as `warden new` writes them.
export WARDEN_TOOLS=${WARDEN_TOOLS:-$root/target/tools}
for lang in js python; do
  for dir in "$root/examples/$lang"/*/ "$root/tests/guests/$lang"/*/; do
    [ -f "$dir/extension.toml" ] || continue
    rm -rf "$dir/wit/deps"
    mkdir -p "$dir/wit/deps/warden-extension"
    cp "$root"/wit/*.wit "$dir/wit/deps/warden-extension/"
    cp -R "$root"/wit/deps/* "$dir/wit/deps/"
    for f in "$root"/wit/wasi/*.wit; do cp "$f" "$dir/wit/deps/wasi-$(basename "$f")"; done
    bash "$root/sdk/$lang/build.sh" "$dir"
  done
done
