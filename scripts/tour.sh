#!/usr/bin/env bash
# The tour: every command end to end on the example extensions, in ./tour: keygen,
# pack, sign, verify, inspect, then `warden run` on each (a fresh, limited instance per call,
# every call audited in ./tour/data), the registry commands, and the audit chain verified.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/build-examples.sh
cargo build --quiet --bin warden
warden() { "$root/target/debug/warden" "$@"; }

rm -rf tour && mkdir -p tour
echo "== keygen"
warden keygen --publisher warden-examples --out tour/keys > tour/trust.toml
cat tour/trust.toml
for ext in examples/*/ tests/guests/hostile/; do
  [ -f "$ext/extension.toml" ] || continue
  name=$(basename "$ext")
  echo "== pack $name"
  warden pack "$ext" --out "tour/$name.wext"
  echo "== sign $name"
  warden sign "tour/$name.wext" --key tour/keys/warden-examples.key
  echo "== verify $name"
  warden verify "tour/$name.wext" --trust tour/trust.toml
  echo "== inspect $name"
  warden inspect "tour/$name.wext"
done
echo "== run hello (http)"
warden run tour/hello.wext --trust tour/trust.toml --data tour/data --http "GET /tour"
echo "== run echo (rpc)"
warden run tour/echo.wext --trust tour/trust.toml --data tour/data --call greet --input '{"name":"tour"}'
echo "== run notes: files in its own /data, a template from the bundle's read-only /assets"
warden run tour/notes.wext --trust tour/trust.toml --data tour/data --grant all --call add --input $'first note\nwritten by the tour'
warden run tour/notes.wext --trust tour/trust.toml --data tour/data --grant all --call get --input 1
echo "== run kv-counter: a counter in its own key-value store (durable across runs)"
warden run tour/kv-counter.wext --trust tour/trust.toml --data tour/data --grant all --call increment
warden run tour/kv-counter.wext --trust tour/trust.toml --data tour/data --grant all --call increment
echo "== run kv-counter without the grant: a typed denial, audited"
warden run tour/kv-counter.wext --trust tour/trust.toml --data tour/data --call increment || true
echo "== run hostile: an infinite loop is stopped at its 1s limit"
if warden run tour/hostile.wext --trust tour/trust.toml --data tour/data --call loop; then
  echo "the infinite loop was not stopped" >&2
  exit 1
fi
echo "== the registry: a tenant (its API key is shown once), installs with their grants, an uninstall"
warden tenant create acme --data tour/data
warden install tour/echo.wext --tenant acme --trust tour/trust.toml --data tour/data
warden install tour/kv-counter.wext --tenant acme --trust tour/trust.toml --data tour/data --grant kv
warden installs --data tour/data
warden uninstall warden-examples.kv-counter --tenant acme --data tour/data
echo "== audit (and a checkpoint kept outside the data dir)"
warden audit --data tour/data
warden audit --data tour/data --checkpoint tour/checkpoints.jsonl
warden audit --data tour/data --verify --checkpoints tour/checkpoints.jsonl
echo "== a tampered bundle is refused"
cp tour/hello.wext tour/tampered.wext
printf 'X' | dd of=tour/tampered.wext bs=1 seek=600 conv=notrunc status=none
cp tour/hello.wext.sig tour/tampered.wext.sig
if warden verify tour/tampered.wext --trust tour/trust.toml; then
  echo "tampered bundle was accepted" >&2
  exit 1
fi
echo "tour complete"
