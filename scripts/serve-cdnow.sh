#!/usr/bin/env bash
# Starts segmentd and loads the CDNOW purchase history into tenant `cdnow`
# through the gRPC API, then keeps serving until Ctrl-C (or SIGTERM).
#
# Settings: SEGMENTD_LISTEN (default 127.0.0.1:50051), SEGMENTD_DATA (default
# ./segmentd-data), SEGMENTD_PROFILE=release for an optimised build (slower
# to build, faster to run; the default debug build shares its compiled
# dependencies with `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${SEGMENTD_LISTEN:-127.0.0.1:50051}
host=${listen%:*}
port=${listen##*:}
if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  echo "serve-cdnow: $listen is already in use; stop what holds it or set SEGMENTD_LISTEN" >&2
  exit 1
fi

profile=${SEGMENTD_PROFILE:-debug}
if [ "$profile" = release ]; then
  cargo build --release --locked
  bin=target/release/segmentd
else
  cargo build --locked
  bin=target/debug/segmentd
fi

"$bin" serve --listen "$listen" &
server=$!
stop() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server"
  exit $?
}
trap stop INT TERM

for _ in $(seq 1 300); do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server" || true
    echo "serve-cdnow: segmentd did not start (see its message above)" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  sleep 0.2
done

"$bin" import --server "$listen" --tenant cdnow --format cdnow data/cdnow/CDNOW_master.txt
echo "segmentd is serving tenant \`cdnow\` on $listen; Ctrl-C stops it."
wait "$server"
