#!/usr/bin/env bash
# Builds extension.wasm (a wasm32-wasip2 component) from src/, ready for `warden pack .`.
# Needs Rust (https://rustup.rs); adds the wasm32-wasip2 target with rustup if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "build.sh: cargo is needed (https://rustup.rs)" >&2; exit 1; }
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2 >&2
fi
cargo build --release --target wasm32-wasip2 >&2
# Where cargo put it: ./target unless CARGO_TARGET_DIR or a cargo config says otherwise.
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cp "${target:-target}/wasm32-wasip2/release/{{crate}}.wasm" extension.wasm
echo "build.sh: wrote extension.wasm" >&2
