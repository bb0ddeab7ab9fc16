#!/usr/bin/env bash
# The scale-out topology on one machine, for tests and demos (issue 12): a throwaway PostgreSQL
# 15 cluster and a moto S3 server (scripts/shared-storage.sh), three stateless `warden serve`
# runners on them, and HAProxy in front (round robin, each runner checked on /readyz). The
# examples are installed for a tenant named `demo`, as scripts/run.sh does on one runner.
#
#   scripts/cluster.sh start    # installs what is missing, starts everything, prints the curl lines
#   scripts/cluster.sh status   # each piece: running, ready, and what HAProxy thinks of each runner
#   scripts/cluster.sh stop     # stops everything start started and removes the state folder
#
# WARDEN_CLUSTER_DIR: the state folder (default /tmp/warden-cluster; keys, tokens, config, logs,
#   each runner's --data, the database and moto's folder). Give each concurrent cluster its own.
# WARDEN_BIN: the `warden` binary to run (default: built in release in $CARGO_TARGET_DIR, or
#   ./target, as scripts/bench-serve.sh does).
# WARDEN_CLUSTER_RUNNERS: how many runners (default 3).
# WARDEN_CLUSTER_POLICY: a file of operator config ([policy] sections) put before [storage].
#
# Everything listens on 127.0.0.1 only, on free ports. A start that fails stops what it had
# started. PostgreSQL runs as the `postgres` user (initdb refuses root), so the state folder is
# 0755; what is private in it (keys, tokens, data dirs) is 0700/0600.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${WARDEN_CLUSTER_DIR:-/tmp/warden-cluster}
case $state in /*) ;; *) state=$PWD/$state ;; esac
state=${state%/}
cd "$root"
# shellcheck source=scripts/lib/load.sh
. "$root/scripts/lib/load.sh"
# shellcheck source=scripts/lib/haproxy.sh
. "$root/scripts/lib/haproxy.sh"
nrunners=${WARDEN_CLUSTER_RUNNERS:-3}
marker=$state/.warden-cluster
etc=$state/etc
logs=$state/logs
say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }
case $nrunners in [1-9]) ;; *) die "WARDEN_CLUSTER_RUNNERS=$nrunners: 1 to 9" ;; esac

haproxy_bin() { command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true; }

# --- processes this cluster started ----------------------------------------------------------
# A pid from a pid file counts only while its command line names this state folder (a pid
# reused by another program is never signalled) and it is not a zombie.
ours() { # PID
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)" != Z ] || return 1
  { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$state/"
}
pid_of() { if [ -f "$1" ]; then cat "$1"; fi; }
stop_pid() { # PIDFILE NAME: SIGTERM, then SIGKILL after 15 s (a runner's calls in flight finish)
  local pid
  pid=$(pid_of "$1")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then
      say "$2 (pid $pid) still running after 15 s: killed"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$1"
}

stop_all() {
  [ -d "$state" ] || return 0
  stop_pid "$state/haproxy.pid" haproxy
  local f
  for f in "$state"/runner-*.pid; do
    if [ -e "$f" ]; then stop_pid "$f" "$(basename "$f" .pid)"; fi
  done
  if [ -d "$state/shared" ]; then
    WARDEN_SHARED_DIR=$state/shared bash "$root/scripts/shared-storage.sh" stop || say "shared-storage.sh stop failed"
  fi
  rm -rf "$state"
}

stop() {
  if [ ! -e "$state" ]; then say "no cluster in $state"; return 0; fi
  [ -e "$marker" ] || die "$state is not a cluster's folder (no .warden-cluster in it): not touching it"
  stop_all
  say "stopped; $state removed"
}

# --- waiting ---------------------------------------------------------------------------------
runner_port() { # I: the port runner I said it listens on (empty until it did)
  sed -n 's|^warden serve listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$logs/runner-$1.out" 2>/dev/null | head -1
}
wait_runner() { # I: listening, then /readyz 200, within 60 s
  local i=$1 pid port
  pid=$(pid_of "$state/runner-$i.pid")
  for _ in $(seq 1 600); do
    ours "$pid" || { tail -20 "$logs/runner-$i.log" >&2; die "runner $i exited at start (log: $logs/runner-$i.log)"; }
    port=$(runner_port "$i")
    if [ -n "$port" ] && [ "$(status "http://127.0.0.1:$port/readyz")" = 200 ]; then return 0; fi
    sleep 0.1
  done
  die "runner $i not ready within 60 s (log: $logs/runner-$i.log)"
}
# HAProxy's view of each runner: "rN STATUS" lines, from its stats page as CSV.
backends() {
  local sport
  sport=$(cat "$state/haproxy.stats-port" 2>/dev/null) || return 0
  curl -s --max-time 5 "http://127.0.0.1:$sport/;csv" | awk -F, '$1 == "runners" && $2 ~ /^r[0-9]+$/ { print $2, $18 }' || true
}
wait_haproxy() { # every runner UP behind it, within 15 s
  local pid up
  pid=$(pid_of "$state/haproxy.pid")
  for _ in $(seq 1 150); do
    ours "$pid" || { cat "$logs/haproxy.log" >&2; die "haproxy exited at start"; }
    up=$(backends | awk '$2 == "UP"' | wc -l)
    [ "$up" -eq "$nrunners" ] && return 0
    sleep 0.1
  done
  backends >&2
  die "HAProxy did not see every runner up within 15 s (log: $logs/haproxy.log)"
}

# --- start -----------------------------------------------------------------------------------
# One line of cluster.env, quoted for the shell (a URL's `&` included).
envline() { printf 'export %s=%q\n' "$1" "$2"; }
usage() {
  # shellcheck disable=SC1091
  . "$state/cluster.env"
  local warden
  warden=$(cat "$state/warden-bin")
  cat <<MSG

warden cluster in $state: $(cat "$state/runners") runners on PostgreSQL + S3 behind HAProxy
  load balancer  $WARDEN_CLUSTER_URL   (HAProxy's stats: $WARDEN_CLUSTER_STATS/)
  runners        $WARDEN_CLUSTER_RUNNER_URLS
  PostgreSQL     $WARDEN_CLUSTER_PG_URL
  S3 (moto)      $WARDEN_CLUSTER_S3 at $AWS_ENDPOINT
  logs           $logs

Tenant demo's API key is in $etc/demo.key. Try:

  # the gateway through the load balancer (x-served-by names the runner that answered)
  curl -si -H "Authorization: Bearer \$(cat $etc/demo.key)" $WARDEN_CLUSTER_URL/api/ext/warden.hello/hi
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -D - -H "Authorization: Bearer \$(cat $etc/demo.key)" $WARDEN_CLUSTER_URL/api/ext/warden.hello/hi | grep -i x-served-by; done
  # key-value data is shared: the count goes up whichever runner answers
  for i in 1 2 3; do curl -s -H "Authorization: Bearer \$(cat $etc/demo.key)" -d hits $WARDEN_CLUSTER_URL/api/ext/warden-examples.kv-counter/increment; echo; done
  # the runner API
  curl -s -H "Authorization: Bearer \$(cat $etc/runner.token)" -d '{"tenant":"demo","extension":"warden.echo","method":"greet","input":{"name":"curl"}}' $WARDEN_CLUSTER_URL/v1/execute
  # the admin API (any runner answers for the fleet): installs, the last audit records
  curl -s -H "Authorization: Bearer \$(cat $etc/admin.token)" $WARDEN_CLUSTER_URL/v1/admin/installs
  curl -s -H "Authorization: Bearer \$(cat $etc/admin.token)" "$WARDEN_CLUSTER_URL/v1/admin/audit?limit=5"
  # the fleet's one audit chain, verified offline (the CLI reads the same config)
  (. $state/cluster.env && $warden audit --config $etc/warden.toml --data $state/cli --verify)

  scripts/cluster.sh status    # what runs; scripts/cluster.sh stop: everything stopped and removed
MSG
}

start() {
  if [ -e "$marker" ]; then
    if show_status >/dev/null 2>&1; then
      say "already running in $state"
      usage
      return 0
    fi
    die "a cluster in $state is not healthy (scripts/cluster.sh status); stop it first"
  fi
  if [ -e "$state" ] && [ -n "$(ls -A "$state" 2>/dev/null)" ]; then
    die "$state exists and is not a cluster's folder; remove it or set WARDEN_CLUSTER_DIR"
  fi
  # An empty folder someone else made (in /tmp, say) could be theirs to watch or plant in.
  if [ -e "$state" ] && { [ ! -d "$state" ] || [ -L "$state" ] || [ "$(stat -c %u "$state")" != "$(id -u)" ]; }; then
    die "$state exists and is not a folder of this user's; remove it or set WARDEN_CLUSTER_DIR"
  fi

  # What it needs: PostgreSQL 15, moto, HAProxy, the wasm target (scripts/setup.sh installs
  # what is missing), the examples and warden.
  bash scripts/setup.sh
  [ -n "$(haproxy_bin)" ] || die "no haproxy after scripts/setup.sh"
  say "building the examples"
  bash scripts/build-examples.sh
  if [ -z "${WARDEN_BIN:-}" ]; then
    say "building warden (release)"
    CARGO_TARGET_DIR=$(target_dir) cargo build --quiet --release --bin warden
    warden=$(target_dir)/release/warden
  else
    warden=$WARDEN_BIN
  fi
  [ -x "$warden" ] || die "no warden binary at $warden"
  case $warden in /*) ;; *) warden=$root/$warden ;; esac

  # From here on, a failure stops what was started.
  mkdir -p "$state"
  chmod 755 "$state"
  : > "$marker"
  echo "$nrunners" > "$state/runners"
  started=0
  trap 'if [ "$started" != 1 ]; then say "start failed: stopping what it started"; stop_all; fi' EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$logs" "$etc"
  chmod 700 "$etc" "$logs"

  say "starting PostgreSQL and moto"
  WARDEN_SHARED_DIR=$state/shared WARDEN_SHARED_S3=1 bash scripts/shared-storage.sh start > "$state/shared.env"
  unset WARDEN_TEST_PG_CA
  # shellcheck disable=SC1091
  . "$state/shared.env"
  local pg_url=${WARDEN_TEST_PG_URL%/postgres}/warden
  # The server has TLS from a throwaway CA (shared-storage.sh): the runners verify it, as a
  # fleet's runners should reach their database.
  if [ -n "${WARDEN_TEST_PG_CA:-}" ]; then pg_url+="?sslmode=verify-full&sslrootcert=$WARDEN_TEST_PG_CA"; fi
  psql "$WARDEN_TEST_PG_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE warden"

  # The fleet's key files (the same 32 bytes on every runner), the operator's tokens, a
  # publisher key and the trust bundle, the operator config.
  (
    umask 077
    head -c 32 /dev/urandom > "$etc/secret.key"
    head -c 32 /dev/urandom > "$etc/audit.key"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$etc/admin.token"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$etc/runner.token"
  )
  "$warden" keygen --publisher warden-examples --out "$etc/keys" > "$etc/trust.toml" 2>> "$logs/setup.log"
  {
    if [ -n "${WARDEN_CLUSTER_POLICY:-}" ]; then cat "$WARDEN_CLUSTER_POLICY"; echo; fi
    cat <<EOF
[storage]
url = "$pg_url"
blobs = "$WARDEN_TEST_S3/cluster"
secret_key_file = "$etc/secret.key"
audit_key_file = "$etc/audit.key"
EOF
  } > "$etc/warden.toml"
  chmod 600 "$etc/warden.toml"
  {
    envline WARDEN_CLUSTER_DIR "$state"
    envline WARDEN_CLUSTER_PG_URL "$pg_url"
    envline WARDEN_CLUSTER_S3 "$WARDEN_TEST_S3/cluster"
    grep '^export AWS_' "$state/shared.env"
  } > "$state/cluster.env"

  # The demo tenant and the examples, published and installed on the shared storage by the
  # CLI (as run.sh does on a data dir). notes is left out: its folder mount is refused on
  # shared storage (each runner would keep its own files).
  # Their chatter goes to logs/setup.log, shown if one fails.
  w() { "$warden" "$@" >> "$logs/setup.log" 2>&1 || { tail -20 "$logs/setup.log" >&2; return 1; }; }
  local place=(--data "$state/cli" --config "$etc/warden.toml")
  local key
  key=$("$warden" tenant create demo "${place[@]}" | sed -n 's/^api key.*: //p')
  [ -n "$key" ] || die "warden tenant create printed no api key"
  (umask 077; echo "$key" > "$etc/demo.key")
  mkdir -p "$state/bundles"
  local ext
  for ext in hello echo kv-counter process/kv-counter; do
    local name=${ext//\//-}
    w pack "examples/$ext" --out "$state/bundles/$name.wext"
    w sign "$state/bundles/$name.wext" --key "$etc/keys/warden-examples.key"
  done
  local inst=(install --tenant demo --trust "$etc/trust.toml" "${place[@]}")
  w "${inst[@]}" "$state/bundles/hello.wext" --grant none
  w "${inst[@]}" "$state/bundles/echo.wext" --grant none
  w "${inst[@]}" "$state/bundles/kv-counter.wext" --grant kv
  "$warden" inspect "$state/bundles/process-kv-counter.wext" > "$logs/process-kv-counter.inspect"
  if grep -q "namespaces.*: available" "$logs/process-kv-counter.inspect"; then
    w "${inst[@]}" "$state/bundles/process-kv-counter.wext" --grant kv
  else
    say "no user namespaces here: the process example is not installed (warden inspect says why)"
  fi

  say "starting $nrunners runners"
  local i urls=()
  for i in $(seq 1 "$nrunners"); do
    # setsid: the runners outlive this script and a Ctrl-C in its terminal.
    env -u WARDEN_ADMIN_TOKEN -u WARDEN_RUNNER_TOKEN -u WARDEN_TRUST_BUNDLE -u WARDEN_AUDIT_KEY \
      setsid "$warden" serve --listen 127.0.0.1:0 --data "$state/runner-$i" \
      --trust "$etc/trust.toml" --config "$etc/warden.toml" \
      --admin-token-file "$etc/admin.token" --runner-token-file "$etc/runner.token" \
      > "$logs/runner-$i.out" 2> "$logs/runner-$i.log" < /dev/null &
    echo $! > "$state/runner-$i.pid"
  done
  for i in $(seq 1 "$nrunners"); do
    wait_runner "$i"
    urls+=("http://127.0.0.1:$(runner_port "$i")")
  done

  say "starting HAProxy"
  local port sport
  port=$(free_port)
  sport=$(free_port)
  echo "$sport" > "$state/haproxy.stats-port"
  local addrs=()
  for i in $(seq 1 "$nrunners"); do addrs+=("127.0.0.1:$(runner_port "$i")"); done
  {
    echo "# Written by scripts/cluster.sh."
    haproxy_config "$port" "$sport" 1 "${addrs[@]}"
  } > "$state/haproxy.cfg"
  local haproxy
  haproxy=$(haproxy_bin)
  "$haproxy" -c -q -f "$state/haproxy.cfg"
  # -db: in the foreground of its own session (not a daemon), so its pid is ours to stop.
  setsid "$haproxy" -db -f "$state/haproxy.cfg" > "$logs/haproxy.log" 2>&1 < /dev/null &
  echo $! > "$state/haproxy.pid"
  wait_haproxy
  {
    envline WARDEN_CLUSTER_URL "http://127.0.0.1:$port"
    envline WARDEN_CLUSTER_STATS "http://127.0.0.1:$sport"
    envline WARDEN_CLUSTER_RUNNER_URLS "${urls[*]}"
    envline WARDEN_CLUSTER_KEY_FILE "$etc/demo.key"
    envline WARDEN_CLUSTER_ADMIN_TOKEN_FILE "$etc/admin.token"
    envline WARDEN_CLUSTER_RUNNER_TOKEN_FILE "$etc/runner.token"
    envline WARDEN_CLUSTER_CONFIG "$etc/warden.toml"
  } >> "$state/cluster.env"
  echo "$warden" > "$state/warden-bin"

  # A check of the whole path: hello through the balancer, answered by every runner.
  local seen code by
  seen=$(
    for _ in $(seq 1 $((2 * nrunners))); do
      code=$(curl -s -o /dev/null -D "$state/.headers" -w '%{http_code}' --max-time 30 \
        -H "Authorization: Bearer $key" "http://127.0.0.1:$port/api/ext/warden.hello/hi") || code=000
      [ "$code" = 200 ] || { echo "hello through the balancer answered $code" >&2; exit 1; }
      by=$(sed -n 's/^x-served-by: *\([^[:space:]]*\).*/\1/Ip' "$state/.headers")
      echo "$by"
    done | sort -u | wc -l
  ) || die "hello through the balancer failed"
  rm -f "$state/.headers"
  [ "$seen" -eq "$nrunners" ] || die "hello answered by $seen runners of $nrunners through HAProxy"
  usage
  started=1
  trap - EXIT INT TERM
}

# --- status ----------------------------------------------------------------------------------
show_status() {
  [ -e "$marker" ] || { echo "no cluster in $state"; return 1; }
  local bad=0 i pid port code
  # shellcheck disable=SC1091
  [ -f "$state/cluster.env" ] && . "$state/cluster.env"
  echo "cluster in $state"
  for i in $(seq 1 "$(cat "$state/runners" 2>/dev/null || echo 0)"); do
    pid=$(pid_of "$state/runner-$i.pid")
    port=$(runner_port "$i")
    if ours "$pid"; then
      code=$(status "http://127.0.0.1:$port/readyz")
      echo "  runner $i   pid $pid, 127.0.0.1:$port, /readyz $code"
      [ "$code" = 200 ] || bad=1
    else
      echo "  runner $i   not running"; bad=1
    fi
  done
  pid=$(pid_of "$state/haproxy.pid")
  if ours "$pid"; then
    echo "  haproxy    pid $pid, ${WARDEN_CLUSTER_URL:-?}; runners: $(backends | tr '\n' ' ')"
    [ "$(backends | awk '$2 != "UP"' | wc -l)" -eq 0 ] || bad=1
  else
    echo "  haproxy    not running"; bad=1
  fi
  if [ -n "${WARDEN_CLUSTER_PG_URL:-}" ] && psql "$WARDEN_CLUSTER_PG_URL" -Atqc 'select 1' > /dev/null 2>&1; then
    echo "  postgres   $WARDEN_CLUSTER_PG_URL, answering"
  else
    echo "  postgres   not answering"; bad=1
  fi
  if [ -n "${AWS_ENDPOINT:-}" ] && curl -sf -o /dev/null --max-time 5 "$AWS_ENDPOINT/moto-api/"; then
    echo "  moto (S3)  $AWS_ENDPOINT, answering"
  else
    echo "  moto (S3)  not answering"; bad=1
  fi
  return "$bad"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) show_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
