#!/usr/bin/env bash
# The main job: `warden serve` on the embedded default storage (./demo/data), with the example
# extensions published and installed for a tenant named `demo`. Prints the curl lines to try,
# then serves in the foreground until Ctrl-C (which finishes calls in flight).
# WARDEN_LISTEN changes the address (default 127.0.0.1:8080).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/build-examples.sh
cargo build --quiet --bin warden
warden() { "$root/target/debug/warden" "$@"; }
listen=${WARDEN_LISTEN:-127.0.0.1:8080}

rm -rf demo && mkdir -p demo && chmod 700 demo
warden keygen --publisher warden-examples --out demo/keys > demo/trust.toml
data=demo/data
# The operator's tokens, in files only the operator can read (never on the command line).
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > demo/admin.token)
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > demo/runner.token)
key=$(warden tenant create demo --data "$data" | sed -n 's/^api key.*: //p')
(umask 077; echo "$key" > demo/demo.key)
for ext in hello echo kv-counter notes; do
  warden pack "examples/$ext" --out "demo/$ext.wext" > /dev/null
  warden sign "demo/$ext.wext" --key demo/keys/warden-examples.key > /dev/null
done
warden install demo/hello.wext --tenant demo --trust demo/trust.toml --data "$data" --grant none
warden install demo/echo.wext --tenant demo --trust demo/trust.toml --data "$data" --grant none
warden install demo/kv-counter.wext --tenant demo --trust demo/trust.toml --data "$data" --grant kv
warden install demo/notes.wext --tenant demo --trust demo/trust.toml --data "$data" --grant all
# The JavaScript hello and the Python kv-counter (componentize-js, componentize-py): 12-18 MB
# components, compiled here, at install (half a minute each), never on a tenant's first request.
for ext in js/hello python/kv-counter; do
  name=${ext//\//-}
  warden pack "examples/$ext" --out "demo/$name.wext" > /dev/null
  warden sign "demo/$name.wext" --key demo/keys/warden-examples.key > /dev/null
done
warden install demo/js-hello.wext --tenant demo --trust demo/trust.toml --data "$data" --grant none
warden install demo/python-kv-counter.wext --tenant demo --trust demo/trust.toml --data "$data" --grant kv
# kv-counter again, as a native process in the OS sandbox, where this kernel offers one.
warden pack examples/process/kv-counter --out demo/kv-counter-process.wext > /dev/null
warden sign demo/kv-counter-process.wext --key demo/keys/warden-examples.key > /dev/null
warden inspect demo/kv-counter-process.wext > demo/kv-counter-process.inspect
if grep -q "namespaces.*: available" demo/kv-counter-process.inspect; then
  warden install demo/kv-counter-process.wext --tenant demo --trust demo/trust.toml --data "$data" --grant kv
else
  echo "note: no user namespaces here, so the process example is not installed (warden inspect says why)"
fi

cat <<MSG

The operator console is at http://$listen/console/ (sign in with the token in demo/admin.token).
The demo tenant's API key is in demo/demo.key. Try, in another terminal:

  # the gateway: an http extension, by the tenant's key
  curl -i -H "Authorization: Bearer \$(cat demo/demo.key)" http://$listen/api/ext/warden.hello/hi
  # no key: 401, as JSON
  curl -i http://$listen/api/ext/warden.hello/hi
  # the runner API: rpc extensions, by the runner token
  curl -s -H "Authorization: Bearer \$(cat demo/runner.token)" -d '{"tenant":"demo","extension":"warden.echo","method":"greet","input":{"name":"curl"}}' http://$listen/v1/execute
  curl -s -H "Authorization: Bearer \$(cat demo/runner.token)" -d '{"tenant":"demo","extension":"warden-examples.kv-counter","method":"increment"}' http://$listen/v1/execute
  # the same hello in JavaScript, and kv-counter in Python
  curl -s -H "Authorization: Bearer \$(cat demo/demo.key)" http://$listen/api/ext/warden-examples.hello-js/hi
  curl -s -H "Authorization: Bearer \$(cat demo/demo.key)" -d hits http://$listen/api/ext/warden-examples.kv-counter-python/increment
  # the same extension as a native process in its sandbox, through the gateway
  curl -s -H "Authorization: Bearer \$(cat demo/demo.key)" -d hits http://$listen/api/ext/warden-examples.kv-counter-process/increment
  # the admin API: installs, the last audit records, metrics
  curl -s -H "Authorization: Bearer \$(cat demo/admin.token)" http://$listen/v1/admin/installs
  curl -s -H "Authorization: Bearer \$(cat demo/admin.token)" "http://$listen/v1/admin/audit?limit=5"
  curl -s -H "Authorization: Bearer \$(cat demo/admin.token)" http://$listen/metrics
  # the audit chain, verified offline
  target/debug/warden audit --data demo/data --verify

MSG
exec "$root/target/debug/warden" serve --data "$data" --trust demo/trust.toml --listen "$listen" \
  --admin-token-file demo/admin.token --runner-token-file demo/runner.token
