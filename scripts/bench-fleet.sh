#!/usr/bin/env bash
# The fleet benchmark (issue 12): hello (examples/hello) requests per second served by the
# single embedded runner (SQLite and files in --data) and by runners on shared storage
# (PostgreSQL + S3 through moto, as scripts/cluster.sh starts them): one runner direct, then
# 1, 2 and 3 runners behind HAProxy (round robin), all in the same run, loaded by `wrk` on
# loopback with the same settings. Prints req/s, p50, p99, the machine's CPU time per request
# (everything on it: servers, PostgreSQL, moto, HAProxy and wrk) and each setup's ratio to the
# embedded runner. On a small machine (2 cores here) every process shares the same cores, so
# more runners do not add throughput: the figures show what shared storage and the balancer
# cost per request. Exits non-zero if any setup answers anything but 2xx under load.
#
#   scripts/bench-fleet.sh
#   BENCH_DURATION=10s BENCH_WARMUP=3s BENCH_THREADS=2 BENCH_CONNECTIONS=64 scripts/bench-fleet.sh
#
# As in scripts/bench-serve.sh: hello's `[limits] profile = "strict"` allows 4 calls in flight,
# so with BENCH_CONNECTIONS=N > 4 the bundle is repacked from the same component with
# `max_concurrent_calls = N` (N <= 64); the tenant's rate (and its one bucket that the fleet's
# runners lease from) is set far above what wrk sends. Every call's audit record is durable
# before its answer on both storages (fsync'ed file rounds; PostgreSQL transactions).
# Builds `warden` in release in $CARGO_TARGET_DIR (default ./target) unless WARDEN_BIN names
# one. Installs wrk and HAProxy (apt-get), PostgreSQL 15 and moto (scripts/setup.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration=${BENCH_DURATION:-10s}
warmup=${BENCH_WARMUP:-3s}
threads=${BENCH_THREADS:-2}
conns=${BENCH_CONNECTIONS:-64}
# shellcheck source=scripts/lib/load.sh
. "$root/scripts/lib/load.sh"
# shellcheck source=scripts/lib/haproxy.sh
. "$root/scripts/lib/haproxy.sh"
say() { echo "bench-fleet: $*" >&2; }
die() { say "$*"; exit 1; }

# --- what it needs ---------------------------------------------------------------------------
bash scripts/setup.sh # wasm32-wasip2, PostgreSQL 15, moto, HAProxy
ensure_wrk
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$haproxy" ] || die "no haproxy after scripts/setup.sh"
say "building examples and warden (release)"
bash scripts/build-examples.sh
if [ -z "${WARDEN_BIN:-}" ]; then
  tdir=$(target_dir)
  CARGO_TARGET_DIR=$tdir cargo build --quiet --release --bin warden
  warden_bin=$tdir/release/warden
else
  warden_bin=$WARDEN_BIN
  case $warden_bin in /*) ;; *) warden_bin=$root/$warden_bin ;; esac
fi
[ -x "$warden_bin" ] || die "no warden binary at $warden_bin"

# --- one scratch folder; everything stopped on exit -------------------------------------------
# 0755: the cluster's PostgreSQL runs as `postgres` under it; the private files are in etc/.
work=$(mktemp -d /tmp/bench-fleet.XXXXXX)
chmod 755 "$work"
mkdir -m 700 "$work/etc" "$work/logs"
cluster=$work/cluster
server_pid=
lb_pid=
stop_pid() { # PID: TERM, then KILL after 10 s
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$server_pid"
  stop_pid "$lb_pid"
  if [ -d "$cluster" ]; then WARDEN_CLUSTER_DIR=$cluster bash scripts/cluster.sh stop || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
set -E
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR

# --- the bundle, the policy ------------------------------------------------------------------
w() { "$warden_bin" "$@"; }
# Chatty commands: their output in logs/setup.log, shown if one fails.
quiet() { "$warden_bin" "$@" >> "$work/logs/setup.log" 2>&1 || { tail -20 "$work/logs/setup.log" >&2; die "warden $1 failed"; }; }
ext=$root/examples/hello
limits_note="hello's own limits (profile strict: 4 calls in flight)"
if [ "$conns" -gt 4 ]; then
  [ "$conns" -le 64 ] || die "BENCH_CONNECTIONS=$conns: at most 64 (the policy ceiling)"
  ext=$work/hello
  cp -r "$root/examples/hello" "$ext"
  rm -rf "$ext/target"
  sed -i "s/^profile = \"strict\"\$/profile = \"strict\"\nmax_concurrent_calls = $conns/" "$ext/extension.toml"
  grep -q "^max_concurrent_calls = $conns\$" "$ext/extension.toml" || die "could not raise max_concurrent_calls"
  # Under a version of its own: the fleet's cluster already publishes hello 0.1.0 as shipped.
  sed -i "s/^version = \"0.1.0\"\$/version = \"0.1.0-bench$conns\"/" "$ext/extension.toml"
  grep -q "^version = \"0.1.0-bench$conns\"\$" "$ext/extension.toml" || die "could not set the version"
  limits_note="the same component repacked with max_concurrent_calls = $conns"
fi
quiet pack "$ext" --out "$work/hello.wext"
rate=1000000 burst=1000000 tconc=1024
cat > "$work/etc/policy.toml" <<EOF
# Rate limiting stays on, set far above what wrk can send from this machine.
[policy.gateway]
tenant_rate = $rate
tenant_burst = $burst
tenant_concurrency = $tconc
EOF
url_path=/api/ext/warden.hello/hi

# --- one run -----------------------------------------------------------------------------------
declare -A rps p50 p99 cpu reqs split commits wcpu pgcpu lbcpu
wrk_args=(-t"$threads" -c"$conns" --latency)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; } # user nice system irq softirq
# CPU ticks (user + system) of the processes PIDS, 0 for one gone.
ticks_of() { # PIDS...
  local pid sum=0 t
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || t=0
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
# PostgreSQL's: the postmaster's, its children's that ended, and every live child's.
pg_ticks() {
  local pm kids
  pm=$(head -1 "$cluster/shared/pg/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  kids=$(awk -v pm="$pm" '$4 == pm { print $1 }' /proc/[0-9]*/stat 2>/dev/null || true)
  # shellcheck disable=SC2086
  echo $(( $(ticks_of "$pm" $kids) + $(awk '{ print $16 + $17 }' "/proc/$pm/stat") ))
}
# The warden processes of the setup being measured: the embedded runner or the fleet's.
warden_pids() {
  if [ -n "$server_pid" ]; then echo "$server_pid"; else cat "$cluster"/runner-*.pid; fi
}
per_req() { awk -v t="$1" -v hz="$2" -v n="$3" 'BEGIN { printf "%.0f", t / hz * 1e6 / n }'; }
# The runners' counts of the bench tenant's hello calls, "n1 n2 n3" (metrics, admin token).
runner_calls() {
  local u n
  for u in $WARDEN_CLUSTER_RUNNER_URLS; do
    n=$(curl -s --max-time 10 -H "Authorization: Bearer $(cat "$WARDEN_CLUSTER_ADMIN_TOKEN_FILE")" "$u/metrics" |
      sed -n 's/^warden_calls_total{tenant="bench",extension="warden.hello",outcome="ok"} //p')
    printf '%s ' "${n:-0}"
  done
}
# Transactions PostgreSQL committed in the fleet's database so far (its statistics are
# flushed within a second).
pg_commits() { psql "$WARDEN_CLUSTER_PG_URL" -Atqc "select xact_commit from pg_stat_database where datname = current_database()"; }
bench() { # NAME URL KEY
  local name=$1 url=$2 key=$3
  local code
  code=$(status -H "Authorization: Bearer $key" "$url")
  [ "$code" = 200 ] || die "$name answered $code, not 200, to GET $url"
  wrk "${wrk_args[@]}" -d"$warmup" -H "Authorization: Bearer $key" "$url" > "$work/logs/$name.warmup.txt"
  local t0 t1 c0 c1 out hz
  hz=$(getconf CLK_TCK)
  local x0=
  c0=
  if [ "$name" != embedded ]; then c0=$(runner_calls); sleep 1.5; x0=$(pg_commits); fi
  local w0 p0 l0
  # shellcheck disable=SC2046
  w0=$(ticks_of $(warden_pids))
  p0=$(pg_ticks)
  l0=$(ticks_of "$lb_pid")
  t0=$(busy_ticks)
  wrk "${wrk_args[@]}" -d"$duration" -H "Authorization: Bearer $key" "$url" > "$work/logs/$name.wrk.txt"
  t1=$(busy_ticks)
  local w1 p1 l1
  # shellcheck disable=SC2046
  w1=$(ticks_of $(warden_pids))
  p1=$(pg_ticks)
  l1=$(ticks_of "$lb_pid")
  out=$work/logs/$name.wrk.txt
  if grep -qE 'Non-2xx|Socket errors' "$out"; then
    cat "$out" >&2
    die "$name: errors or non-2xx answers under load (see above)"
  fi
  code=$(status -H "Authorization: Bearer $key" "$url")
  [ "$code" = 200 ] || die "$name answered $code after the run"
  rps[$name]=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  reqs[$name]=$(awk '/requests in/ {print $1}' "$out")
  cpu[$name]=$(per_req $((t1 - t0)) "$hz" "${reqs[$name]}")
  wcpu[$name]=$(per_req $((w1 - w0)) "$hz" "${reqs[$name]}")
  pgcpu[$name]=-
  lbcpu[$name]=-
  if [ "$name" != embedded ]; then pgcpu[$name]=$(per_req $((p1 - p0)) "$hz" "${reqs[$name]}"); fi
  if [ -n "$lb_pid" ]; then lbcpu[$name]=$(per_req $((l1 - l0)) "$hz" "${reqs[$name]}"); fi
  split[$name]=-
  commits[$name]=-
  if [ -n "$c0" ]; then
    sleep 1.5
    commits[$name]=$(awk -v a="$x0" -v b="$(pg_commits)" -v n="${reqs[$name]}" 'BEGIN { printf "%.2f", (b - a) / n }')
    c1=$(runner_calls)
    # Each runner's share of the calls measured (warm-up excluded), in %.
    split[$name]=$(awk -v a="$c0" -v b="$c1" 'BEGIN { n = split(a, x, " "); split(b, y, " "); t = 0;
      for (i = 1; i <= n; i++) { d[i] = y[i] - x[i]; t += d[i] }
      for (i = 1; i <= n; i++) printf "%s%.0f", (i > 1 ? "/" : ""), (t ? 100 * d[i] / t : 0) }')
  fi
  say "$name: ${rps[$name]} req/s (runners' share: ${split[$name]})"
}

# --- 1. the embedded runner ---------------------------------------------------------------------
say "embedded runner (SQLite and files in --data)"
w keygen --publisher warden-examples --out "$work/etc/keys" > "$work/etc/trust.toml" 2>> "$work/logs/setup.log"
quiet sign "$work/hello.wext" --key "$work/etc/keys/warden-examples.key" --out "$work/hello.embedded.sig"
data=$work/etc/data
key=$(w tenant create bench --data "$data" | sed -n 's/^api key.*: //p')
[ -n "$key" ] || die "warden tenant create printed no api key"
quiet install "$work/hello.wext" --sig "$work/hello.embedded.sig" --tenant bench --trust "$work/etc/trust.toml" \
  --data "$data" --grant none
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/etc/admin.token")
port=$(free_port)
env -u WARDEN_ADMIN_TOKEN -u WARDEN_RUNNER_TOKEN -u WARDEN_TRUST_BUNDLE -u WARDEN_AUDIT_KEY \
  "$warden_bin" serve --listen "127.0.0.1:$port" --data "$data" --trust "$work/etc/trust.toml" \
  --config "$work/etc/policy.toml" --admin-token-file "$work/etc/admin.token" \
  > "$work/logs/embedded.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  kill -0 "$server_pid" 2>/dev/null || die "the embedded runner exited at start (log: $work/logs/embedded.log)"
  [ "$(status "http://127.0.0.1:$port/readyz")" = 200 ] && break
  sleep 0.1
done
[ "$(status "http://127.0.0.1:$port/readyz")" = 200 ] || die "the embedded runner was not ready within 60 s"
bench embedded "http://127.0.0.1:$port$url_path" "$key"
stop_pid "$server_pid"
server_pid=

# --- 2. the fleet: PostgreSQL + S3, three runners -------------------------------------------------
say "the fleet (scripts/cluster.sh)"
WARDEN_CLUSTER_DIR=$cluster WARDEN_BIN=$warden_bin WARDEN_CLUSTER_POLICY=$work/etc/policy.toml \
  bash scripts/cluster.sh start > "$work/logs/cluster.txt"
# shellcheck disable=SC1091
. "$cluster/cluster.env"
place=(--data "$cluster/cli" --config "$WARDEN_CLUSTER_CONFIG")
fkey=$(w tenant create bench "${place[@]}" | sed -n 's/^api key.*: //p')
[ -n "$fkey" ] || die "warden tenant create printed no api key"
quiet sign "$work/hello.wext" --key "$cluster/etc/keys/warden-examples.key" --out "$work/hello.fleet.sig"
quiet install "$work/hello.wext" --sig "$work/hello.fleet.sig" --tenant bench --trust "$cluster/etc/trust.toml" \
  "${place[@]}" --grant none
read -r -a runner_urls <<< "$WARDEN_CLUSTER_RUNNER_URLS"
[ "${#runner_urls[@]}" -eq 3 ] || die "the cluster has ${#runner_urls[@]} runners, not 3"

bench pg-direct "${runner_urls[0]}$url_path" "$fkey"

# HAProxy in front of the first N runners: the settings of scripts/cluster.sh's.
balancer() { # N: started, every runner UP; its URL in $lb_url
  local n=$1 port sport i
  port=$(free_port)
  sport=$(free_port)
  local addrs=()
  for i in $(seq 1 "$n"); do addrs+=("${runner_urls[$((i - 1))]#http://}"); done
  haproxy_config "$port" "$sport" 0 "${addrs[@]}" > "$work/haproxy-$n.cfg"
  "$haproxy" -c -q -f "$work/haproxy-$n.cfg"
  "$haproxy" -db -f "$work/haproxy-$n.cfg" > "$work/logs/haproxy-$n.log" 2>&1 < /dev/null &
  lb_pid=$!
  local up=0
  for _ in $(seq 1 150); do
    kill -0 "$lb_pid" 2>/dev/null || die "haproxy exited at start (log: $work/logs/haproxy-$n.log)"
    up=$({ curl -s --max-time 5 "http://127.0.0.1:$sport/;csv" || true; } |
      awk -F, '$1 == "runners" && $2 ~ /^r[0-9]+$/ && $18 == "UP"' | wc -l)
    [ "$up" -eq "$n" ] && break
    sleep 0.1
  done
  [ "$up" -eq "$n" ] || die "HAProxy saw $up of $n runners up within 15 s"
  lb_url=http://127.0.0.1:$port
}
for n in 1 2 3; do
  balancer "$n"
  bench "lb-$n" "$lb_url$url_path" "$fkey"
  stop_pid "$lb_pid"
  lb_pid=
done

# --- report -----------------------------------------------------------------------------------
case $WARDEN_CLUSTER_PG_URL in
  *sslmode=verify-full*) pg_tls="over TLS, verify-full" ;;
  *) pg_tls="TLS as the URL's default mode allows" ;;
esac
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<EOF

fleet benchmark: examples/hello on 127.0.0.1, $(nproc) CPUs shared by everything below and wrk
wrk ${wrk_args[*]} -d$duration (after a $warmup warm-up), the same for every setup
warden serve: fresh instance per request, tenant key auth, rate limiting ON (tenant_rate
  $rate/s, burst $burst, tenant_concurrency $tconc: above what wrk sends), $limits_note;
  each call's audit record durable before its answer
embedded: one runner, SQLite and files in --data
PostgreSQL + S3: PostgreSQL $(psql "$WARDEN_CLUSTER_PG_URL" -Atqc 'show server_version' | awk '{print $1}') ($pg_tls) and moto on this
  machine (scripts/cluster.sh), three runners up throughout; "direct" loads runner 1 alone,
  "HAProxy xN" the first N runners behind $("$haproxy" -v | awk 'NR == 1 {print $1, $3}') (round robin, keep-alive)
CPU us/req: busy CPU time per request measured: the whole machine's (every process, wrk
  too), and of it the warden runners', PostgreSQL's and HAProxy's
PG tx/req: transactions committed in PostgreSQL per request (audit rounds, rate leases, lookups)

                                                     --------- CPU us/req ----------
setup                      req/s    p50 ms    p99 ms  machine  warden  postgres  haproxy  PG tx/req  vs embedded  runners' share %
EOF
row() { # NAME LABEL
  printf '%-22s %9.0f %9.3f %9.3f %8s %7s %9s %8s %10s %11sx  %s\n' "$2" "${rps[$1]}" "${p50[$1]}" \
    "${p99[$1]}" "${cpu[$1]}" "${wcpu[$1]}" "${pgcpu[$1]}" "${lbcpu[$1]}" "${commits[$1]}" \
    "$(ratio "${rps[$1]}" "${rps[embedded]}")" "${split[$1]}"
}
row embedded "embedded (SQLite)"
row pg-direct "PostgreSQL, direct"
row lb-1 "PostgreSQL, HAProxy x1"
row lb-2 "PostgreSQL, HAProxy x2"
row lb-3 "PostgreSQL, HAProxy x3"
echo
echo "shared storage's cost (one runner, direct):  $(ratio "${rps[pg-direct]}" "${rps[embedded]}")x the embedded runner's req/s"
echo "HAProxy's cost (one runner through it):      $(ratio "${rps[lb-1]}" "${rps[pg-direct]}")x the same runner direct"
echo "three runners against one, both behind HAProxy: $(ratio "${rps[lb-3]}" "${rps[lb-1]}")x"
