#!/usr/bin/env bash
# Builds a JavaScript extension into DIR/extension.wasm, ready for `warden pack DIR`:
#
#   sdk/js/build.sh DIR
#
# DIR holds `index.js` (one ES module, the whole extension) and `wit/world.wit` (its world, the
# first `world` in that file) with the packages it uses in `wit/deps/`. Besides the component it
# writes `DIR/types/`, the world's TypeScript declarations (`guest-types.mjs`). The tools are
# componentize-js and jco as pinned by package-lock.json next to this script, installed once
# per lock (`npm ci`, no install scripts run) under $WARDEN_TOOLS (default
# ~/.cache/warden/tools). Nothing is rebuilt when the sources, the world and the lock are
# unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "${1:?usage: build.sh EXTENSION_DIR}" && pwd)
for f in index.js wit/world.wit; do
  [ -f "$dir/$f" ] || { echo "build.sh: $dir/$f is missing" >&2; exit 1; }
done
[ -d "$dir/wit/deps" ] || { echo "build.sh: $dir/wit/deps is missing (the WIT packages the world uses)" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "build.sh: Node.js 18+ with npm is needed (https://nodejs.org or your system's packages)" >&2; exit 1; }
world=$(sed -n 's/^[[:space:]]*world[[:space:]]\{1,\}\([a-z0-9-]\{1,\}\)[[:space:]]*{.*/\1/p' "$dir/wit/world.wit" | head -n 1)
[ -n "$world" ] || { echo "build.sh: no world in $dir/wit/world.wit" >&2; exit 1; }

lock_id=$(sha256sum "$here/package-lock.json" | cut -c1-16)
tools=${WARDEN_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/tools}/js-$lock_id
# One install per lock, under a lock, and marked complete last: an interrupted install is made
# again.
mkdir -p "$(dirname "$tools")"
exec 9>"$tools.lock"
flock 9
if [ ! -f "$tools/.complete" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  touch "$tools/.complete"
fi
flock -u 9

stamp=$( (cat "$here/package-lock.json" "$here/build.sh" "$here/guest-types.mjs" "$dir/index.js"; find "$dir/wit" \( -type f -o -type l \) -name '*.wit' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-64)
if [ -f "$dir/extension.wasm" ] && [ -d "$dir/types" ] && [ "$(cat "$dir/.build-stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

# componentize-js 0.23 wires `addEventListener('fetch')` only for a world that exports exactly
# `wasi:http/incoming-handler@0.2.10`, so the WASI packages are given to it at 0.2.10: the same
# interfaces (0.2 releases only add), with the one 0.2.12 addition left ungated. The host links
# any 0.2.x the component imports.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$dir/wit" "$work/wit"
to_0_2_10='s/\(wasi:\(cli\|clocks\|filesystem\|http\|io\|random\|sockets\)\(\/[a-z-]*\)\{0,1\}\)@0\.2\.[0-9]\{1,\}\([^-0-9]\|$\)/\1@0.2.10\4/g'
for f in "$work"/wit/deps/wasi-*.wit; do
  [ -e "$f" ] || continue
  sed -i -e "$to_0_2_10" -e '/@since(version = 0\.2\.1[1-9])/d' "$f"
done
sed -i "$to_0_2_10" "$work/wit/world.wit"
"$tools/node_modules/.bin/componentize-js" "$dir/index.js" --wit "$work/wit" \
  --world-name "$world" -o "$work/extension.wasm" >&2
mv "$work/extension.wasm" "$dir/extension.wasm"
# The world's TypeScript declarations (`types/`, one .d.ts per interface), named as index.js
# imports them (at 0.2.10, like the world given to componentize-js).
node "$here/guest-types.mjs" "$tools" "$work/wit" "$work/types" >&2
rm -rf "$dir/types"
mv "$work/types" "$dir/types"
# Written beside and renamed: a symlink at .build-stamp is replaced, never written through.
echo "$stamp" >"$work/stamp"
mv -f "$work/stamp" "$dir/.build-stamp"
