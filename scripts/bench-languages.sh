#!/usr/bin/env bash
# The languages benchmark: the same hello (an http extension answering GET /hi) in Rust
# (examples/hello), JavaScript (examples/js/hello, componentize-js) and Python
# (examples/python/hello, componentize-py), a fresh instance per call, measured
#
#   1. in process, through the embedding API (benches/languages: `Tenant::call_http` on one
#      thread, audit records in memory): per-call p50 and p99, and the same components on raw
#      Wasmtime with warden's engine settings, phase by phase (Store, instantiate, handler,
#      Store drop) with the page faults per call: where the time goes;
#   2. through the gateway (`warden serve`, the three installed for one tenant, the audit log
#      durable): one sequential keep-alive client (`latency-probe`), per-request p50 and p99;
#   1b. in process again, on a host that keeps instances between calls (`[policy.component]
#      warm_calls`, off by default: a weaker isolation profile an operator may accept). The
#      JavaScript hello there is examples/js/hello-handler, which exports its handler itself:
#      componentize-js's fetch event cannot be dispatched twice in one instance;
#   3. per process: `warden run --http "GET /hi"` on a data dir where nothing is compiled yet
#      (the first load compiles: cold), then again on the same data dir (the code cache is
#      warm): wall time from start to the answer, CPU time and peak memory (/usr/bin/time,
#      the largest of warden and its compile child). Compile time = cold - warm (median).
#
# and prints a table with the ratios to Rust, also written to target/bench-languages.txt. Goal
# (issue 13): a JavaScript or Python call costs no more than 5x the Rust one (p50, in process
# and through the gateway; printed, not enforced). About 75 s of measuring on 2 cores, a third of
# it compiling the JavaScript and Python components once, after the builds (Wasmtime in
# release takes 10-20 minutes the first time); not part of scripts/test.sh (no benchmark is).
#
#   scripts/bench-languages.sh
#   CARGO_TARGET_DIR=/tmp/ci/target scripts/bench-languages.sh   # release builds kept apart
#   BENCH_CALLS=2000 BENCH_WARMUP=200 BENCH_RAW_CALLS=500 BENCH_WARM_RUNS=5 \
#     BENCH_GATEWAY_SECONDS=8 scripts/bench-languages.sh
#
# Builds: `warden` and the latency probe (benches/serve/hyper-hello) in release as
# scripts/bench-serve.sh does, and benches/languages in release, all in $CARGO_TARGET_DIR
# (default ./target; benches/languages uses the root workspace's versions and release profile,
# so Wasmtime is compiled once for both). Runs scripts/setup.sh and scripts/build-examples.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
calls=${BENCH_CALLS:-2000}
warmup=${BENCH_WARMUP:-200}
raw_calls=${BENCH_RAW_CALLS:-500}
warm_runs=${BENCH_WARM_RUNS:-5}
gw_seconds=${BENCH_GATEWAY_SECONDS:-8}
gw_warmup=${BENCH_GATEWAY_WARMUP:-2}
# shellcheck source=scripts/lib/load.sh
. "$root/scripts/lib/load.sh"
tdir=$(target_dir)
out_file=$root/target/bench-languages.txt
say() { echo "bench-languages: $*" >&2; }
die() { say "$*"; exit 1; }
started=$(date +%s)

# --- what it needs ---------------------------------------------------------------------------
bash scripts/setup.sh
[ -x /usr/bin/time ] || {
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time
}
say "building examples, warden, latency-probe and benches/languages (release)"
bash scripts/build-examples.sh
build_release "$tdir"
CARGO_TARGET_DIR=$tdir cargo build --quiet --release \
  --manifest-path "$root/benches/languages/Cargo.toml"
warden_bin=$tdir/release/warden
probe_bin=$tdir/hyper-hello/release/latency-probe
bench_bin=$tdir/release/bench-languages
for b in "$warden_bin" "$probe_bin" "$bench_bin"; do [ -x "$b" ] || die "no $b after the build"; done

langs=(rust js python)
declare -A dir id label
dir[rust]=examples/hello
dir[js]=examples/js/hello
dir[python]=examples/python/hello
# Kept instances (1b): the same hellos, but JavaScript's in the style that can answer twice.
dir[jsh]=examples/js/hello-handler
label[rust]=Rust
label[js]=JavaScript
label[python]=Python
for l in "${langs[@]}" jsh; do
  [ -f "${dir[$l]}/extension.wasm" ] || die "no ${dir[$l]}/extension.wasm after build-examples.sh"
  id[$l]=$(sed -n 's/^id = "\(.*\)"$/\1/p' "${dir[$l]}/extension.toml" | head -1)
  [ -n "${id[$l]}" ] || die "no id in ${dir[$l]}/extension.toml"
done

# --- one scratch folder, the service stopped on exit -----------------------------------------
work=$(mktemp -d /tmp/bench-languages.XXXXXX)
chmod 700 "$work"
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

measuring=$(date +%s)

# --- keys, signed bundles, a data dir with nothing compiled ----------------------------------
w() { "$warden_bin" "$@"; }
w keygen --publisher warden-examples --out "$work/keys" > "$work/trust.toml" 2>/dev/null
declare -A bundle size_mb
for l in "${langs[@]}" jsh; do
  bundle[$l]=$work/hello-$l.wext
  w pack "${dir[$l]}" --out "${bundle[$l]}" > /dev/null
  w sign "${bundle[$l]}" --key "$work/keys/warden-examples.key" > /dev/null
  size_mb[$l]=$(awk -v b="$(stat -c %s "${dir[$l]}/extension.wasm")" 'BEGIN { printf "%.2f", b / 1048576 }')
done
data=$work/data
key=$(w tenant create bench --data "$data" | sed -n 's/^api key.*: //p')
[ -n "$key" ] || die "warden tenant create printed no api key"
[ -z "$(ls -A "$data/cache" 2>/dev/null)" ] || die "the new data dir already holds compiled code"

# --- 3. cold and warm starts: `warden run --http` --------------------------------------------
declare -A cold_wall cold_cpu cold_rss warm_wall warm_rss compile_s
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
run_once() { # LANG TAG: one `warden run`, its answer checked; prints "wall_s cpu_s maxrss_kb"
  local l=$1 tag=$2 t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f '%U %S %M' -o "$work/time.$l.$tag" \
    env -u WARDEN_AUDIT_KEY -u WARDEN_TRUST_BUNDLE "$warden_bin" run "${bundle[$l]}" \
    --trust "$work/trust.toml" --data "$data" --grant none --http "GET /hi" \
    > "$work/run.$l.$tag.out" 2> "$work/run.$l.$tag.err" ||
    { cat "$work/run.$l.$tag.err" >&2; die "warden run of ${label[$l]} hello failed ($tag)"; }
  t1=$(date +%s%N)
  grep -q '^HTTP/1.1 200' "$work/run.$l.$tag.out" && grep -q 'Hello' "$work/run.$l.$tag.out" ||
    { cat "$work/run.$l.$tag.out" >&2; die "${label[$l]} hello did not answer 200 Hello ($tag)"; }
  tail -1 "$work/time.$l.$tag" | awk -v ns=$((t1 - t0)) '{ printf "%.3f %.2f %d\n", ns / 1e9, $1 + $2, $3 }'
}
for l in "${langs[@]}"; do
  say "${label[$l]}: first run, cold code cache (compiles)"
  read -r wall cpu rss < <(run_once "$l" cold)
  cold_wall[$l]=$wall cold_cpu[$l]=$cpu cold_rss[$l]=$((rss / 1024))
  : > "$work/warm.$l"
  for i in $(seq 1 "$warm_runs"); do run_once "$l" "warm$i" >> "$work/warm.$l"; done
  warm_wall[$l]=$(awk '{ print $1 }' "$work/warm.$l" | median)
  warm_rss[$l]=$(awk '{ print $3 }' "$work/warm.$l" | median | awk '{ printf "%d", $1 / 1024 }')
  compile_s[$l]=$(awk -v c="${cold_wall[$l]}" -v w="${warm_wall[$l]}" 'BEGIN { printf "%.2f", c - w }')
  say "${label[$l]}: cold ${cold_wall[$l]} s, warm ${warm_wall[$l]} s (median of $warm_runs)"
done

# --- 1. in process ---------------------------------------------------------------------------
say "in process: $calls calls each after $warmup warm-up, interleaved; raw Wasmtime $raw_calls each"
bench_args=()
for l in "${langs[@]}"; do bench_args+=("$l=${bundle[$l]}"); done
bench_args+=(--warm "rust=${bundle[rust]}" "js=${bundle[jsh]}" "python=${bundle[python]}")
BENCH_WARM_CALLS=${BENCH_WARM_CALLS:-1000} BENCH_CALLS=$calls BENCH_WARMUP=$warmup BENCH_RAW_CALLS=$raw_calls \
  "$bench_bin" "$work/trust.toml" "$data" "${bench_args[@]}" > "$work/inproc.txt" ||
  { cat "$work/inproc.txt" >&2; die "benches/languages failed"; }
declare -A in_p50 in_p99 in_mean in_flt load_ms load_src raw_line image_line
declare -A kw_p50 kw_p99 kw_flt
while read -r kind l rest; do
  case $kind in
    inproc) read -r _n in_p50[$l] in_p99[$l] in_mean[$l] in_flt[$l] <<< "$rest" ;;
    inwarm) read -r _n kw_p50[$l] kw_p99[$l] _mean kw_flt[$l] <<< "$rest" ;;
    load) [ -n "${load_ms[$l]:-}" ] || read -r load_ms[$l] load_src[$l] <<< "$rest" ;;
    raw) raw_line[$l]=$rest ;;
    rawskip) raw_line[$l]="skip $rest" ;;
    image) image_line[$l]=$rest ;;
  esac
done < "$work/inproc.txt"
for l in "${langs[@]}"; do
  [ -n "${in_p50[$l]:-}" ] && [ -n "${kw_p50[$l]:-}" ] || die "no in-process figures for ${label[$l]}"
done

# --- 2. through the gateway ------------------------------------------------------------------
say "gateway: warden serve, the three installed for one tenant, one sequential client"
for l in "${langs[@]}"; do
  w install "${bundle[$l]}" --tenant bench --trust "$work/trust.toml" --data "$data" --grant none > /dev/null
done
cat > "$work/policy.toml" <<EOF
# Rate limiting stays on, set far above what one sequential client sends.
[policy.gateway]
tenant_rate = 1000000
tenant_burst = 1000000
EOF
port=$(free_port)
env -u WARDEN_RUNNER_TOKEN -u WARDEN_ADMIN_TOKEN -u WARDEN_TRUST_BUNDLE -u WARDEN_AUDIT_KEY \
  "$warden_bin" serve --listen "127.0.0.1:$port" --data "$data" --trust "$work/trust.toml" \
  --config "$work/policy.toml" > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  kill -0 "$server_pid" 2>/dev/null || { tail -20 "$work/serve.log" >&2; die "warden serve exited at start"; }
  [ "$(status "http://127.0.0.1:$port/readyz")" = 200 ] && break
  sleep 0.1
done
[ "$(status "http://127.0.0.1:$port/readyz")" = 200 ] || die "warden serve not ready within 60s"
declare -A gw_p50 gw_p99 gw_n first_ms
for l in "${langs[@]}"; do
  path=/api/ext/${id[$l]}/hi
  t0=$(date +%s%N)
  code=$(status -H "Authorization: Bearer $key" "http://127.0.0.1:$port$path")
  first_ms[$l]=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$code" = 200 ] || { tail -20 "$work/serve.log" >&2; die "the gateway answered $code for ${label[$l]} hello"; }
done
for l in "${langs[@]}"; do
  path=/api/ext/${id[$l]}/hi
  "$probe_bin" "127.0.0.1:$port" "$path" "$key" "$gw_warmup" > /dev/null
  read -r n _secs bad p50 p99 _max _mean < <("$probe_bin" "127.0.0.1:$port" "$path" "$key" "$gw_seconds")
  [ "$bad" = 0 ] || die "the gateway answered $bad non-2xx to ${label[$l]} hello under the probe"
  gw_n[$l]=$n gw_p50[$l]=$p50 gw_p99[$l]=$p99
  say "${label[$l]}: gateway p50 $p50 ms, p99 $p99 ms ($n requests)"
done
serve_hwm=$(awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$server_pid/status")
serve_rss=$(awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$server_pid/status")
stop_server

# --- report ------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
row() { # TITLE VALUE_RUST VALUE_JS VALUE_PYTHON
  printf '%-40s %12s %12s %12s\n' "$1" "$2" "$3" "$4"
}
rawf() { # LANG FIELD(1-based after N): a raw figure, or "-"
  local line=${raw_line[$1]:-skip}
  case $line in skip*) echo "-" ;; *) echo "$line" | awk -v f="$2" '{ print $(f + 1) }' ;; esac
}
verdict() { # WHERE RUST JS PYTHON: the goal against p50s
  local js py
  js=$(awk -v a="$3" -v b="$2" 'BEGIN { print (a <= 5 * b) ? "met" : "NOT met" }')
  py=$(awk -v a="$4" -v b="$2" 'BEGIN { print (a <= 5 * b) ? "met" : "NOT met" }')
  echo "goal (a JavaScript or Python call <= 5x the Rust one), $1 p50: JavaScript $js ($(ratio "$3" "$2")), Python $py ($(ratio "$4" "$2"))"
}
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD -- 2>/dev/null || rev="$rev+changes"
{
  echo "languages benchmark: the same hello (GET /hi) in Rust, JavaScript and Python, a fresh instance per call"
  echo "warden $rev, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  row "" "Rust" "JavaScript" "Python"
  row "component (MB)" "${size_mb[rust]}" "${size_mb[js]}" "${size_mb[python]}"
  echo "in process: Tenant::call_http, $calls calls each after $warmup, interleaved (µs)"
  row "  p50" "${in_p50[rust]}" "${in_p50[js]}" "${in_p50[python]}"
  row "  p99" "${in_p99[rust]}" "${in_p99[js]}" "${in_p99[python]}"
  row "  mean" "${in_mean[rust]}" "${in_mean[js]}" "${in_mean[python]}"
  row "  p50 vs Rust" "1.0x" "$(ratio "${in_p50[js]}" "${in_p50[rust]}")" "$(ratio "${in_p50[python]}" "${in_p50[rust]}")"
  row "  p99 vs Rust" "1.0x" "$(ratio "${in_p99[js]}" "${in_p99[rust]}")" "$(ratio "${in_p99[python]}" "${in_p99[rust]}")"
  row "  page faults per call" "${in_flt[rust]}" "${in_flt[js]}" "${in_flt[python]}"
  echo "in process, instances kept between calls ([policy.component] warm_calls = ${BENCH_WARM_CALLS:-1000}; JavaScript: hello-handler) (µs)"
  row "  p50" "${kw_p50[rust]}" "${kw_p50[js]}" "${kw_p50[python]}"
  row "  p99" "${kw_p99[rust]}" "${kw_p99[js]}" "${kw_p99[python]}"
  row "  p50 vs Rust, fresh instance" "$(ratio "${kw_p50[rust]}" "${in_p50[rust]}")" "$(ratio "${kw_p50[js]}" "${in_p50[rust]}")" "$(ratio "${kw_p50[python]}" "${in_p50[rust]}")"
  row "  p50 vs Rust, kept instance" "1.0x" "$(ratio "${kw_p50[js]}" "${kw_p50[rust]}")" "$(ratio "${kw_p50[python]}" "${kw_p50[rust]}")"
  row "  page faults per call" "${kw_flt[rust]}" "${kw_flt[js]}" "${kw_flt[python]}"
  echo "raw Wasmtime, warden's engine settings, $raw_calls calls each: p50 of each phase (µs)"
  row "  Store + request" "$(rawf rust 1)" "$(rawf js 1)" "$(rawf python 1)"
  row "  instantiate" "$(rawf rust 2)" "$(rawf js 2)" "$(rawf python 2)"
  row "  handler (guest code, body)" "$(rawf rust 3)" "$(rawf js 3)" "$(rawf python 3)"
  row "  Store drop (instance freed)" "$(rawf rust 4)" "$(rawf js 4)" "$(rawf python 4)"
  row "  whole call p50" "$(rawf rust 5)" "$(rawf js 5)" "$(rawf python 5)"
  row "  whole call p99" "$(rawf rust 6)" "$(rawf js 6)" "$(rawf python 6)"
  row "  page faults per call" "$(rawf rust 7)" "$(rawf js 7)" "$(rawf python 7)"
  echo "gateway: warden serve, one sequential keep-alive client, ${gw_seconds}s each, durable audit (ms)"
  row "  p50" "${gw_p50[rust]}" "${gw_p50[js]}" "${gw_p50[python]}"
  row "  p99" "${gw_p99[rust]}" "${gw_p99[js]}" "${gw_p99[python]}"
  row "  p50 vs Rust" "1.0x" "$(ratio "${gw_p50[js]}" "${gw_p50[rust]}")" "$(ratio "${gw_p50[python]}" "${gw_p50[rust]}")"
  row "  p99 vs Rust" "1.0x" "$(ratio "${gw_p99[js]}" "${gw_p99[rust]}")" "$(ratio "${gw_p99[python]}" "${gw_p99[rust]}")"
  row "  requests" "${gw_n[rust]}" "${gw_n[js]}" "${gw_n[python]}"
  row "  first request after start (ms)" "${first_ms[rust]}" "${first_ms[js]}" "${first_ms[python]}"
  echo "per process: warden run --http \"GET /hi\", start to answer and exit"
  row "  compile (cold - warm, s)" "${compile_s[rust]}" "${compile_s[js]}" "${compile_s[python]}"
  row "  cold start, nothing compiled (s)" "${cold_wall[rust]}" "${cold_wall[js]}" "${cold_wall[python]}"
  row "  cold CPU, with the compile child (s)" "${cold_cpu[rust]}" "${cold_cpu[js]}" "${cold_cpu[python]}"
  row "  cold peak memory (MiB)" "${cold_rss[rust]}" "${cold_rss[js]}" "${cold_rss[python]}"
  row "  warm start, code cache (s, median)" "${warm_wall[rust]}" "${warm_wall[js]}" "${warm_wall[python]}"
  row "  warm peak memory (MiB, median)" "${warm_rss[rust]}" "${warm_rss[js]}" "${warm_rss[python]}"
  row "  load in process from the cache (ms)" "${load_ms[rust]}" "${load_ms[js]}" "${load_ms[python]}"
  echo "warden serve with the three loaded: peak RSS $serve_hwm MiB (now $serve_rss MiB)"
  echo
  echo "components:"
  for l in "${langs[@]}"; do echo "  ${label[$l]}: ${image_line[$l]:-?}"; done
  echo
  verdict "in process" "${in_p50[rust]}" "${in_p50[js]}" "${in_p50[python]}"
  verdict "in process, kept instances against Rust's fresh one" "${in_p50[rust]}" "${kw_p50[js]}" "${kw_p50[python]}"
  verdict "in process, kept instances against Rust's kept one" "${kw_p50[rust]}" "${kw_p50[js]}" "${kw_p50[python]}"
  verdict "gateway" "${gw_p50[rust]}" "${gw_p50[js]}" "${gw_p50[python]}"
  echo "took $(( $(date +%s) - started )) s, $(( $(date +%s) - measuring )) s of it measuring (the rest: setup and builds)"
} | tee "$out_file.tmp"
mv "$out_file.tmp" "$out_file"
say "written to $out_file"
