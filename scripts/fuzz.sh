#!/usr/bin/env bash
# Runs one cargo-fuzz target for a number of seconds: scripts/fuzz.sh TARGET [SECONDS]
# Targets: manifest, bundle_reader, allowed_host, dsse_envelope, trust_bundle, pem_keys,
# audit_reader, redact_cut. cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables
# them for this build only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: scripts/fuzz.sh redact_cut|manifest|bundle_reader|allowed_host|dsse_envelope|trust_bundle|pem_keys|audit_reader [SECONDS]}
seconds=${2:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$root/fuzz"
mkdir -p "corpus/$target"
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -max_len=65536 -print_final_stats=1
