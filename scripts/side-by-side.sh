#!/usr/bin/env bash
# segmentd, PostgreSQL and DuckDB side by side: the same generated tenant
# (`segmentd generate`), the same audiences, counts checked equal, median
# times and ratios printed as a table per size (scripts/side_by_side.py).
#
#   scripts/side-by-side.sh              # scales 0.01 and 0.1 (100k, 1M customers)
#   SCALES="0.1 1" scripts/side-by-side.sh
#   WORK=/big/disk scripts/side-by-side.sh   # scale 1 takes about 40 GB
#
# Installs what it needs: PostgreSQL from Debian's packages (when its server
# is missing), psycopg, duckdb, grpcio and grpcio-tools from PyPI into a
# virtual environment. PostgreSQL runs as its own user on a private socket,
# with settings for this machine (2 cores: parallel workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scales=${SCALES:-0.01 0.1}
root=$(pwd)

cargo build --release --locked --quiet
bin=$root/target/release/segmentd

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/postgres" ]; then
  echo "installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
venv=$root/target/side-by-side-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  'psycopg[binary]==3.2.*' 'duckdb==1.1.*' 'grpcio==1.68.*' 'grpcio-tools==1.68.*'

work=$(mktemp -d "${WORK:-/tmp}/side-by-side.XXXXXX")
chmod 755 "$work"
server=
cleanup() {
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  if [ -f "$work/pg/postmaster.pid" ]; then
    su postgres -s /bin/sh -c "$pg_bin/pg_ctl -D $work/pg -m fast stop" >/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir "$work/pg" "$work/pgsock"
chown postgres "$work/pg" "$work/pgsock"
su postgres -s /bin/sh -c "$pg_bin/initdb -D $work/pg -A trust -U postgres" >/dev/null
pg_port=$(free_port)
su postgres -s /bin/sh -c "$pg_bin/pg_ctl -D $work/pg -l $work/pg/log -w start -o \
  '-p $pg_port -k $work/pgsock -c listen_addresses= -c shared_buffers=4GB -c work_mem=256MB \
   -c maintenance_work_mem=2GB -c effective_cache_size=16GB -c max_parallel_workers_per_gather=2 \
   -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=16GB'" >/dev/null
dsn="host=$work/pgsock port=$pg_port user=postgres dbname=postgres"

for scale in $scales; do
  echo "== scale $scale" >&2
  rm -rf "$work/csv" "$work/data" "$work/duck.db"
  "$bin" generate --scale "$scale" --out "$work/csv" --format csv 2>&1 | tail -1 >&2
  chmod -R a+r "$work/csv"
  start=$(date +%s)
  "$bin" generate --scale "$scale" --data "$work/data" 2>&1 | tail -1 >&2
  echo "segmentd: written through the engine in $(($(date +%s) - start)) s" >&2
  port=$(free_port)
  "$bin" serve --listen "127.0.0.1:$port" --data "$work/data" 2>"$work/serve.log" &
  server=$!
  for _ in $(seq 1 600); do
    if grep -q "serving" "$work/serve.log"; then break; fi
    sleep 0.1
  done
  customers=$(python3 -c "print(max(1, round(10_000_000 * $scale)))")
  "$venv/bin/python" scripts/side_by_side.py --csv "$work/csv" --segmentd "127.0.0.1:$port" \
    --pg-dsn "$dsn" --duckdb "$work/duck.db" --label "scale $scale ($customers customers):"
  kill -TERM "$server"
  wait "$server" || true
  server=
done
