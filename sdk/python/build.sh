#!/usr/bin/env bash
# Builds a Python extension into DIR/extension.wasm, ready for `warden pack DIR`:
#
#   sdk/python/build.sh DIR
#
# DIR holds `app.py` (the module that defines the world's exports; other modules beside it are
# included) and `wit/world.wit` (its world, the first `world` in that file) with the packages it
# uses in `wit/deps/`. The tool is componentize-py as pinned (with its hash) by
# requirements.txt next to this script, installed once per pin in a virtual environment under
# $WARDEN_TOOLS (default ~/.cache/warden/tools). Nothing is rebuilt when the sources, the world
# and the pin are unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "${1:?usage: build.sh EXTENSION_DIR}" && pwd)
for f in app.py wit/world.wit; do
  [ -f "$dir/$f" ] || { echo "build.sh: $dir/$f is missing" >&2; exit 1; }
done
[ -d "$dir/wit/deps" ] || { echo "build.sh: $dir/wit/deps is missing (the WIT packages the world uses)" >&2; exit 1; }
python=$(command -v python3 || true)
[ -n "$python" ] || { echo "build.sh: python3 (3.9+) is needed" >&2; exit 1; }
world=$(sed -n 's/^[[:space:]]*world[[:space:]]\{1,\}\([a-z0-9-]\{1,\}\)[[:space:]]*{.*/\1/p' "$dir/wit/world.wit" | head -n 1)
[ -n "$world" ] || { echo "build.sh: no world in $dir/wit/world.wit" >&2; exit 1; }

pin_id=$(sha256sum "$here/requirements.txt" | cut -c1-16)
tools=${WARDEN_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/tools}/python-$pin_id
# One install per pin, made in place (a venv's scripts name its path) under a lock, and marked
# complete last: an interrupted install is made again.
mkdir -p "$(dirname "$tools")"
exec 9>"$tools.lock"
flock 9
if [ ! -f "$tools/.complete" ]; then
  rm -rf "$tools"
  "$python" -m venv "$tools" >&2 ||
    { echo "build.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    --only-binary :all: -r "$here/requirements.txt" >&2
  touch "$tools/.complete"
fi
flock -u 9

stamp=$( (cat "$here/requirements.txt" "$here/build.sh"; find "$dir" -maxdepth 1 \( -type f -o -type l \) -name '*.py' -print0 | sort -z | xargs -0 cat; find "$dir/wit" \( -type f -o -type l \) -name '*.wit' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-64)
if [ -f "$dir/extension.wasm" ] && [ "$(cat "$dir/.build-stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$dir" && "$tools/bin/componentize-py" --quiet -d wit -w "$world" componentize app -o "$work/extension.wasm") >&2
mv "$work/extension.wasm" "$dir/extension.wasm"
# Written beside and renamed: a symlink at .build-stamp is replaced, never written through.
echo "$stamp" >"$work/stamp"
mv -f "$work/stamp" "$dir/.build-stamp"
