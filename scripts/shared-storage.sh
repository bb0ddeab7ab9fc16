#!/usr/bin/env bash
# Shared storage for tests and demos (issue 12): a throwaway PostgreSQL 15 cluster and a moto S3
# server on loopback.
#
#   eval "$(bash scripts/shared-storage.sh start)"   # prints export lines; state in $WARDEN_SHARED_DIR
#   bash scripts/shared-storage.sh restart-pg         # for the "PostgreSQL restarts under load" test
#   bash scripts/shared-storage.sh stop               # stops what start started, removes the folder
#
# WARDEN_SHARED_DIR picks the state folder (default /tmp/warden-shared): give each concurrent run
# its own. WARDEN_SHARED_S3=0 starts PostgreSQL only (no moto, nothing installed for it);
# WARDEN_SHARED_S3=auto starts moto only if it is installed; 1 (the default) installs it if missing.
#
# PostgreSQL refuses to run as root: initdb and pg_ctl run as the `postgres` user (runuser) on
# a folder it owns; the server listens on 127.0.0.1 only, on a free port, auth "trust" (the
# folder and port are this run's; nothing listens beyond loopback).
#
# TLS (WARDEN_SHARED_TLS=1, the default; 0 for a server without it): the server runs with
# ssl=on, its certificate (subjectAltName IP:127.0.0.1 and DNS:localhost) signed by a throwaway
# CA made here with openssl, in $WARDEN_SHARED_DIR/tls; plaintext is still accepted (the "host"
# lines of pg_hba.conf match both). Printed: WARDEN_TEST_PG_CA=<tls>/ca.pem, the CA to trust
# (sslmode=verify-full&sslrootcert=...). The folder also holds, for the TLS tests, other-ca.pem
# (a CA that signed nothing the server has) and client.pem + client.key, the certificate of the
# role `warden_cert`, which logs in over TLS by certificate only (pg_hba "cert").
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
state=${WARDEN_SHARED_DIR:-/tmp/warden-shared}
s3=${WARDEN_SHARED_S3:-1}
tls=${WARDEN_SHARED_TLS:-1}
if [ "$s3" = auto ]; then if command -v moto_server >/dev/null; then s3=1; else s3=0; fi; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# A throwaway CA, the server's certificate and key, another CA, and a client certificate, in
# $state/tls (valid for 30 days; each start makes new ones). P-256 keys: quick to make.
make_tls() {
  local d=$state/tls
  command -v openssl >/dev/null || { echo "no openssl (apt-get install openssl), or WARDEN_SHARED_TLS=0" >&2; exit 1; }
  mkdir -p "$d"; chmod 755 "$d"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  for ca in ca other-ca; do
    openssl req -x509 "${ec[@]}" -keyout "$d/$ca.key" -out "$d/$ca.pem" -days 30 \
      -subj "/CN=warden throwaway $ca $(date +%s)" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$d/openssl.log"
  done
  # leaf NAME CN SAN_AND_USAGE
  leaf() {
    openssl req -new "${ec[@]}" -keyout "$d/$1.key" -out "$d/$1.csr" -subj "/CN=$2" 2>>"$d/openssl.log"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -out "$d/$1.pem" -days 30 -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "$3") 2>>"$d/openssl.log"
    rm -f "$d/$1.csr"
    chmod 600 "$d/$1.key"
  }
  leaf server localhost $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'
  leaf client warden_cert "extendedKeyUsage=clientAuth"
  chmod 644 "$d"/*.pem
  # The server refuses a key that others can read, or that it does not own.
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$d/server.key"; fi
  rm -f "$d/ca.key" "$d/other-ca.key" "$d/ca.srl"
}

start() {
  if [ -e "$state/env" ]; then cat "$state/env"; return; fi
  [ -x "$PGBIN/initdb" ] || { echo "no PostgreSQL 15 in $PGBIN (apt-get install postgresql-15)" >&2; exit 1; }
  if [ "$s3" != 0 ] && ! command -v moto_server >/dev/null; then
    # ~45 s into a fresh venv on this machine; the rust image already ships moto 5.2.1 + Flask.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'moto[server]==5.2.1' >&2
  fi
  mkdir -p "$state"; chmod 755 "$state"
  mkdir -p "$state/pg" "$state/sock"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$state/pg" "$state/sock"; fi
  local pg_port s3_port
  pg_port=$(free_port)
  # --no-sync: 0.9 s instead of 4.2 s; the server itself runs with fsync on.
  as_pg "$PGBIN/initdb" -D "$state/pg" -U warden --auth=trust -E UTF8 --locale=C.UTF-8 \
    --no-sync --no-instructions >"$state/initdb.log" 2>&1
  local opts="-p $pg_port -k $state/sock -c listen_addresses=127.0.0.1 -c max_connections=300"
  if [ "$tls" != 0 ]; then
    make_tls
    opts+=" -c ssl=on -c ssl_cert_file=$state/tls/server.pem -c ssl_key_file=$state/tls/server.key"
    opts+=" -c ssl_ca_file=$state/tls/ca.pem"
    # First match wins: warden_cert only by certificate, over TLS; everyone else as initdb set.
    { printf '%s\n' "hostssl all warden_cert 127.0.0.1/32 cert" "host all warden_cert all reject"
      cat "$state/pg/pg_hba.conf"; } >"$state/pg_hba.new"
    cat "$state/pg_hba.new" >"$state/pg/pg_hba.conf"; rm -f "$state/pg_hba.new"
  fi
  echo "$opts" >"$state/pg-opts"
  as_pg "$PGBIN/pg_ctl" -D "$state/pg" -l "$state/pg/server.log" -w -t 30 -o "$(cat "$state/pg-opts")" start >&2
  if [ "$tls" != 0 ]; then
    psql "postgres://warden@127.0.0.1:$pg_port/postgres?sslmode=disable" -qc "CREATE ROLE warden_cert LOGIN" >&2
  fi
  {
    echo "export WARDEN_SHARED_DIR=$state"
    echo "export WARDEN_TEST_PG_URL=postgres://warden@127.0.0.1:$pg_port/postgres"
    if [ "$tls" != 0 ]; then echo "export WARDEN_TEST_PG_CA=$state/tls/ca.pem"; fi
  } >"$state/env"
  if [ "$s3" != 0 ]; then
    s3_port=$(free_port)
    moto_server -H 127.0.0.1 -p "$s3_port" >"$state/moto.log" 2>&1 &
    echo $! >"$state/moto.pid"
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$s3_port/moto-api/" && break; sleep 0.1; done
    curl -sf -X PUT "http://127.0.0.1:$s3_port/warden-test" >/dev/null   # the bucket
    cat >>"$state/env" <<EOT
export WARDEN_TEST_S3=s3://warden-test
export AWS_ENDPOINT=http://127.0.0.1:$s3_port
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
EOT
  fi
  cat "$state/env"
}

stop() {
  [ -d "$state" ] || return 0
  # Only the moto this folder started: a pid file could name any process by now (or be
  # planted in a folder someone else made).
  if [ -f "$state/moto.pid" ]; then
    local pid
    pid=$(cat "$state/moto.pid")
    if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto_server \
      && [ "$(stat -c %u "/proc/$pid")" = "$(id -u)" ]; then
      kill "$pid" 2>/dev/null || true
    fi
  fi
  if [ -f "$state/pg/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$state/pg" -w -m fast stop >&2 || true; fi
  rm -rf "$state"
}

restart_pg() { as_pg "$PGBIN/pg_ctl" -D "$state/pg" -l "$state/pg/server.log" -w -m fast restart -o "$(cat "$state/pg-opts")" >&2; }

case ${1:-} in
  start) start ;;
  stop) stop ;;
  restart-pg) restart_pg ;;
  *) echo "usage: $0 start|stop|restart-pg" >&2; exit 2 ;;
esac
