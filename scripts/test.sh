#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test. CI runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/build-examples.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# The embedding example must keep working as documented.
cargo run --quiet -p warden-host --example embed
