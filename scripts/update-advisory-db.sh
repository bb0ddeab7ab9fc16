#!/usr/bin/env bash
# Replaces the RustSec advisory database snapshot in supply-chain/advisory-db with the newest one.
# Needs GitHub (or ADVISORY_DB_SOURCE=<a clone or mirror of it>); run it where that is reachable
# and commit the result. scripts/deny.sh checks advisories against this snapshot in CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source_repo=${ADVISORY_DB_SOURCE:-https://github.com/RustSec/advisory-db}
dest="$root/supply-chain/advisory-db"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone --quiet --depth 1 "$source_repo" "$work/db"
commit=$(git -C "$work/db" rev-parse HEAD)
date=$(git -C "$work/db" show -s --format=%cI HEAD)
for d in crates rust LICENSES; do
  [ -d "$work/db/$d" ] || { echo "update-advisory-db: $source_repo has no $d/ folder: not the RustSec database?" >&2; exit 1; }
done

rm -rf "$dest.new"
mkdir -p "$dest.new"
cp -r "$work/db/crates" "$work/db/rust" "$work/db/LICENSES" "$work/db/LICENSE.txt" "$dest.new/"
cat >"$dest.new/SNAPSHOT" <<SNAP
# A copy of the RustSec advisory database (https://github.com/RustSec/advisory-db, CC0-1.0),
# kept here because CI cannot reach GitHub. scripts/deny.sh checks advisories against it when no
# fresher copy is on the machine; scripts/update-advisory-db.sh replaces it with a newer one.
source = "https://github.com/RustSec/advisory-db"
commit = "$commit"
date = "$date"
SNAP
rm -rf "$dest"
mv "$dest.new" "$dest"
echo "update-advisory-db: supply-chain/advisory-db is now $commit of $date ($(find "$dest" -name '*.md' | wc -l) advisories)"
