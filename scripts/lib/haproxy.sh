# shellcheck shell=bash
# The HAProxy config of a fleet on one machine, shared by scripts/cluster.sh and
# scripts/bench-fleet.sh: round robin over the runners, each checked on /readyz every second, a
# stats page (CSV at /;csv) on its own port.
#
#   haproxy_config PORT STATS_PORT SERVED_BY ADDR...   # prints it; SERVED_BY=1 adds x-served-by
haproxy_config() {
  local port=$1 sport=$2 served_by=$3 i=0 addr
  shift 3
  cat <<CFG
global
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 10s
frontend warden
  bind 127.0.0.1:$port
  default_backend runners
backend runners
  balance roundrobin
  option httpchk
  http-check send meth GET uri /readyz ver HTTP/1.1 hdr host localhost
  http-check expect status 200
  default-server inter 1s fall 2 rise 1
CFG
  if [ "$served_by" = 1 ]; then echo "  http-response set-header x-served-by %s"; fi
  for addr in "$@"; do
    i=$((i + 1))
    echo "  server r$i $addr check"
  done
  cat <<CFG
listen stats
  bind 127.0.0.1:$sport
  stats enable
  stats uri /
CFG
}
