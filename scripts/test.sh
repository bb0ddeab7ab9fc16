#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test. CI runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# A CI run builds once: incremental data would only fill its disk (about a third of target/).
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
bash scripts/setup.sh
bash scripts/build-examples.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Supply chain: licenses, one Wasmtime, crates.io only (advisories where the database exists).
bash scripts/deny.sh
mkdir -p target
# Shared storage for the PostgreSQL store's tests (they fail under CI without it): a throwaway
# PostgreSQL on loopback and moto for S3 (scripts/setup.sh installs it), in a folder of this
# run's, stopped whatever happens.
WARDEN_SHARED_DIR=$(mktemp -u /tmp/warden-shared.XXXXXX)
export WARDEN_SHARED_DIR
trap 'bash scripts/shared-storage.sh stop' EXIT
# In two steps: `eval "$(…)"` alone would hide a failed start.
shared_env=$(WARDEN_SHARED_S3=${WARDEN_SHARED_S3:-auto} bash scripts/shared-storage.sh start)
eval "$shared_env"
cargo test --workspace 2>&1 | tee target/test-output.log
# The service's end-to-end tests again, on shared storage (PostgreSQL + S3 through moto, a fresh
# database and bucket prefix per test), with the fleet's own tests (several runners on one
# storage): the same tests, the other backend.
WARDEN_TEST_BACKEND=shared cargo test -p warden-cli --test all serve:: 2>&1 | tee -a target/test-output.log
bash tests/console/run.sh 2>&1 | tee -a target/test-output.log
# The runner and admin APIs against their OpenAPI document: schemathesis, bounded in time.
bash scripts/fuzz-api.sh
# The embedding example must keep working as documented.
# The embedding example, as `cargo test --workspace` built it (`cargo run -p warden-host`
# alone would unify other features and build Wasmtime a second time).
"${CARGO_TARGET_DIR:-target}/debug/examples/embed"
# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test
# binary with nothing in it).
awk '/^test result:/ { p += $4; f += $6 } /^console: / { p += $2; f += $4 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log
