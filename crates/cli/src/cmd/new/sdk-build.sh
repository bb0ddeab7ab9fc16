#!/usr/bin/env bash
# Builds extension.wasm from {{source}}, ready for `warden pack .`: warden's {{lang}} SDK script
# (.warden-sdk/build.sh) with its pinned {{tool}}, installed once under $WARDEN_TOOLS
# (default ~/.cache/warden/tools). Needs {{needs}}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/.warden-sdk/build.sh" "$here"
echo "build.sh: wrote extension.wasm" >&2
