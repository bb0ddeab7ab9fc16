# Shared by the load scripts (bench-serve.sh, noisy-neighbour.sh): wrk installed, a free
# loopback port, `warden serve` started, a request's status, wrk's latencies in milliseconds.
# Sourced, not run.

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The cargo target folder, absolute ($CARGO_TARGET_DIR, default ./target).
target_dir() {
  local t=${CARGO_TARGET_DIR:-$root/target}
  case $t in /*) echo "$t" ;; *) echo "$root/$t" ;; esac
}
# Release builds of `warden` and of the bench tools (benches/serve/hyper-hello: the bare
# hyper server and B's latency probe), in TDIR and TDIR/hyper-hello.
build_release() { # TDIR
  CARGO_TARGET_DIR=$1 cargo build --quiet --release --bin warden
  CARGO_TARGET_DIR=$1/hyper-hello cargo build --quiet --release --locked \
    --manifest-path "$root/benches/serve/hyper-hello/Cargo.toml"
}
# `warden serve` in the background on 127.0.0.1:PORT over WORK's data, trust, policy and admin
# token (no other token or key from the caller's environment), its output in WORK/warden.log;
# its pid in $server_pid.
start_warden() { # BIN WORK DATA PORT
  env -u WARDEN_RUNNER_TOKEN -u WARDEN_TRUST_BUNDLE -u WARDEN_AUDIT_KEY \
    WARDEN_ADMIN_TOKEN="$(cat "$2/admin.token")" "$1" serve \
    --listen "127.0.0.1:$4" --data "$3" --trust "$2/trust.toml" --config "$2/policy.toml" \
    > "$2/warden.log" 2>&1 &
  server_pid=$!
}
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$@" || true; }
to_ms() { # wrk's "1.20ms" / "558.00us" / "1.02s" -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}
