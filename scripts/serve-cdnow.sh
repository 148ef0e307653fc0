#!/usr/bin/env bash
# Starts segmentd on 127.0.0.1:50051 and loads the CDNOW purchase history
# into tenant `cdnow` through the gRPC API, then keeps serving until Ctrl-C.
# Settings: SEGMENTD_LISTEN, SEGMENTD_DATA (as for `segmentd serve`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
bin=target/release/segmentd
listen=${SEGMENTD_LISTEN:-127.0.0.1:50051}

"$bin" serve --listen "$listen" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"' INT TERM

host=${listen%:*}
port=${listen##*:}
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  sleep 0.2
done

"$bin" import --server "$listen" --tenant cdnow --format cdnow data/cdnow/CDNOW_master.txt
echo "segmentd is serving tenant \`cdnow\` on $listen; Ctrl-C stops it."
wait "$server"
