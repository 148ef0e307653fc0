#!/usr/bin/env python3
"""Writes a deterministic events-jsonl file for import benchmarks: a line per
customer first, then orders, messages and clicks spread over 90 days.

    scripts/gen-events-jsonl.py --events 1000000 --customers 100000 > events.jsonl
"""
import argparse
import datetime
import json
import random
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--events", type=int, default=1_000_000)
parser.add_argument("--customers", type=int, default=100_000)
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()

rng = random.Random(args.seed)
out = sys.stdout
start = 1_790_000_000  # 2026-09-21
tags = ["vip", "wholesale", "gift", "newsletter", "returning"]
for c in range(args.customers):
    customer = {"customer_id": f"c{c}", "opted_in": rng.random() < 0.6}
    if rng.random() < 0.3:
        customer["tags"] = [rng.choice(tags)]
    out.write(json.dumps({"customer": customer}) + "\n")
for e in range(args.events):
    customer = f"c{int(rng.paretovariate(1.2)) % args.customers}"
    t = start + rng.randrange(90 * 86_400)
    # RFC 3339 in UTC, as grpcurl payloads carry it.
    time = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {"event_id": f"e{e}", "customer_id": customer, "time": time}
    kind = rng.random()
    if kind < 0.4:
        event["order"] = {"value_cents": rng.randrange(500, 20_000)}
    elif kind < 0.8:
        event["message"] = {}
    else:
        event["click"] = {"broadcast_id": f"b{rng.randrange(20)}"}
    out.write(json.dumps({"event": event}) + "\n")
