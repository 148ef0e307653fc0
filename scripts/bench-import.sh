#!/usr/bin/env bash
# Measures `segmentd import --format events-jsonl` into a local release
# server: a generated file (scripts/gen-events-jsonl.py) imported at three
# batch sizes (1,000; the import's default, 5,000; the most, 10,000) into
# fresh tenants, each batch a durable RecordEvents (or UpsertCustomers).
#
#   scripts/bench-import.sh            # 1,000,000 events, 100,000 customers
#   EVENTS=200000 CUSTOMERS=20000 scripts/bench-import.sh
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-1000000}
customers=${CUSTOMERS:-100000}

cargo build --release --locked --quiet
bin=target/release/segmentd
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data "$work/data" 2>"$work/log" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 scripts/gen-events-jsonl.py --events "$events" --customers "$customers" >"$work/events.jsonl"
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

# Customers first, then events: the events' rate is the figure issue 6 sets.
head -n "$customers" "$work/events.jsonl" >"$work/customers.jsonl"
tail -n "+$((customers + 1))" "$work/events.jsonl" >"$work/only-events.jsonl"

echo "events-jsonl import, $events events after $customers customers, $(nproc) cores, $(uname -m)"
echo "| batch size | customers/s | events | seconds | events/s |"
echo "| --- | --- | --- | --- | --- |"
rate() { sed -E 's/^imported ([0-9]+) lines .* in ([0-9.]+) s \(([0-9]+) lines\/s\).*/\1 \2 \3/'; }
for batch in 1000 5000 10000; do
  import() {
    "$bin" import --server "127.0.0.1:$port" --tenant "bench-$batch" --format events-jsonl \
      --batch-size "$batch" "$1" 2>/dev/null | tail -1
  }
  # "imported N lines into tenant `t` in S s (R lines/s): ..."
  read -r _ _ customer_rate < <(import "$work/customers.jsonl" | rate)
  read -r lines seconds event_rate < <(import "$work/only-events.jsonl" | rate)
  echo "| $batch | $customer_rate | $lines | $seconds | $event_rate |"
done
