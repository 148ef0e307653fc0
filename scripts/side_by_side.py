#!/usr/bin/env python3
"""Counts the same audiences over the same generated tenant with segmentd
(over gRPC), PostgreSQL and DuckDB; checks that all three agree and prints
each engine's median time and its ratio to segmentd's.

Run by scripts/side-by-side.sh, which builds segmentd, installs PostgreSQL
and the Python packages, and passes the paths below.

    side_by_side.py --csv DIR --segmentd HOST:PORT --pg-dsn DSN --duckdb FILE
"""
import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time

# 2026-11-30T23:59:59Z: one second before the generated history ends
# (`segmentd generate`'s DEFAULT_END), so "today" is a whole day.
AS_OF = 1_796_083_200 - 1
DAY = 86_400


def day_start(days_back):
    """00:00 UTC (the tenant's zone) of the day `days_back` before AS_OF's."""
    today = AS_OF - AS_OF % DAY
    return today - days_back * DAY


def epoch(date):
    return int(datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.timezone.utc).timestamp())


def within(days):
    """WITHIN Nd: from 00:00 of N-1 days before today up to AS_OF."""
    return f"time BETWEEN {day_start(days - 1)} AND {AS_OF}"


def has_event(kind, window="TRUE"):
    return f"EXISTS (SELECT 1 FROM events e WHERE e.customer_id = c.id AND e.kind = '{kind}' AND e.{window})"


def has_tag(tag):
    return f"EXISTS (SELECT 1 FROM customer_tags t WHERE t.customer_id = c.id AND t.tag = '{tag}')"


# Each audience in segmentd's text form and as SQL over the tables that
# `segmentd generate --format csv` writes, written by hand from RULES.md:
# a missing value is in no comparison and in every negation; spent and
# order_count are 0 without orders; windows are UTC days (the tenant's zone).
RULES = [
    (
        "1 clause",
        'opted_in',
        "SELECT count(*) FROM customers c WHERE c.opted_in",
    ),
    (
        "2 clauses",
        'opted_in AND state IN ("CA", "TX", "NY")',
        "SELECT count(*) FROM customers c WHERE c.opted_in AND c.state IN ('CA', 'TX', 'NY')",
    ),
    (
        "3 clauses, windows",
        "opted_in AND ordered WITHIN 30d AND NOT messaged WITHIN 7d",
        f"SELECT count(*) FROM customers c WHERE c.opted_in AND {has_event('order', within(30))} "
        f"AND NOT {has_event('message', within(7))}",
    ),
    (
        "5 clauses, 30-day window, amount range",
        'opted_in AND state IN ("CA", "TX", "FL", "NY") AND ordered WITHIN 30d '
        'AND lifetime_spend BETWEEN 50 AND 500 AND NOT tag = "tag-000"',
        "SELECT count(*) FROM customers c WHERE c.opted_in AND c.state IN ('CA', 'TX', 'FL', 'NY') "
        f"AND {has_event('order', within(30))} AND c.lifetime_spend_cents BETWEEN 5000 AND 50000 "
        f"AND NOT {has_tag('tag-000')}",
    ),
    (
        "answer and lists",
        'answered("fit-quiz", "size", "M") AND klaviyo_list IN ("list-00", "list-03")',
        # The generator gives at most one answer per question, so the latest
        # answer is the only one.
        "SELECT count(*) FROM customers c WHERE EXISTS (SELECT 1 FROM answers a WHERE a.customer_id = c.id "
        "AND a.experience = 'fit-quiz' AND a.question = 'size' AND a.answer = 'M') "
        "AND EXISTS (SELECT 1 FROM customer_lists l WHERE l.customer_id = c.id AND l.list IN ('list-00', 'list-03'))",
    ),
    (
        "cart value, latest cart",
        "abandoned_cart WITHIN 7d AND abandoned_cart_value > 100 AND NOT ordered WITHIN 7d",
        f"SELECT count(*) FROM customers c WHERE {has_event('abandoned_cart', within(7))} "
        "AND c.id IN (SELECT customer_id FROM (SELECT customer_id, value_cents, row_number() OVER "
        "(PARTITION BY customer_id ORDER BY time DESC, seq DESC) AS r FROM events WHERE kind = 'abandoned_cart') x "
        f"WHERE r = 1 AND value_cents > 10000) AND NOT {has_event('order', within(7))}",
    ),
    (
        "10 clauses",
        '(state = "CA" OR tag = "tag-002") AND NOT ordered WITHIN 30d AND spent BETWEEN 50 AND 500 '
        'AND opted_in AND created SINCE 2025-06-01 AND order_count >= 2 AND NOT tag = "tag-000" '
        "AND lifetime_spend < 5000 AND ordered BEFORE 2025-12-01 AND clicked WITHIN 90d",
        "SELECT count(*) FROM customers c WHERE (c.state = 'CA' OR " + has_tag("tag-002") + ") "
        f"AND NOT {has_event('order', within(30))} "
        "AND c.id IN (SELECT customer_id FROM events WHERE kind = 'order' GROUP BY customer_id "
        "HAVING sum(value_cents) BETWEEN 5000 AND 50000 AND count(*) >= 2) "
        f"AND c.opted_in AND c.create_time BETWEEN {epoch('2025-06-01')} AND {AS_OF} "
        f"AND NOT {has_tag('tag-000')} AND c.lifetime_spend_cents < 500000 "
        f"AND {has_event('order', 'time < ' + str(epoch('2025-12-01')))} "
        f"AND {has_event('click', within(90))}",
    ),
]

SCHEMA = """
CREATE TABLE customers (id integer PRIMARY KEY, state text, time_zone text, opted_in boolean,
                        lifetime_spend_cents bigint, create_time bigint);
CREATE TABLE customer_tags (customer_id integer NOT NULL, tag text NOT NULL);
CREATE TABLE customer_lists (customer_id integer NOT NULL, list text NOT NULL);
CREATE TABLE events (seq bigint NOT NULL, customer_id integer NOT NULL, kind text NOT NULL,
                     time bigint NOT NULL, value_cents bigint, broadcast_id text);
CREATE TABLE answers (seq bigint NOT NULL, customer_id integer NOT NULL, experience text NOT NULL,
                      question text NOT NULL, answer text NOT NULL, time bigint NOT NULL);
"""
TABLES = {
    "customers": "customers.csv",
    "customer_tags": "customer_tags.csv",
    "customer_lists": "customer_lists.csv",
    "events": "events.csv",
    "answers": "answers.csv",
}
PG_INDEXES = """
CREATE INDEX ON customers (state);
CREATE INDEX ON customer_tags (tag, customer_id);
CREATE INDEX ON customer_tags (customer_id);
CREATE INDEX ON customer_lists (list, customer_id);
CREATE INDEX ON events (kind, time, customer_id);
CREATE INDEX ON events (customer_id, kind, time);
CREATE INDEX ON answers (experience, question, answer, customer_id);
"""


def timed(run, budget):
    """Seconds of the first `run()`, the median over at least 3 more runs
    (up to 200 within `budget` seconds), and its result."""
    t = time.perf_counter()
    result = run()
    first = time.perf_counter() - t
    times = []
    started = time.perf_counter()
    while len(times) < 3 or (len(times) < 200 and time.perf_counter() - started < budget):
        t = time.perf_counter()
        again = run()
        times.append(time.perf_counter() - t)
        if again != result:
            sys.exit(f"an engine gave {again} after {result} for the same count")
    return first, statistics.median(times), result


def segmentd_client(address):
    import grpc
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    root = os.path.join(os.path.dirname(__file__), "..", "proto")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(["protoc", f"-I{root}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", "segmentd/v1/segmentd.proto"])
    if code != 0:
        sys.exit("protoc failed on proto/segmentd/v1/segmentd.proto")
    sys.path.insert(0, out)
    from segmentd.v1 import segmentd_pb2, segmentd_pb2_grpc

    stub = segmentd_pb2_grpc.SegmentServiceStub(grpc.insecure_channel(address))

    def count(tenant, rule):
        request = segmentd_pb2.CountAudienceRequest(tenant=tenant, rule_text=rule)
        request.as_of.seconds = AS_OF
        return stub.CountAudience(request).count

    return count


def load_postgres(dsn, csv):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        for table in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(SCHEMA)
        for table, name in TABLES.items():
            with db.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                with open(os.path.join(csv, name), "rb") as f:
                    while chunk := f.read(1 << 20):
                        copy.write(chunk)
        db.execute(PG_INDEXES)
        db.execute("VACUUM ANALYZE")


def load_duckdb(path, csv):
    import duckdb

    if os.path.exists(path):
        os.remove(path)
    db = duckdb.connect(path)
    db.execute(SCHEMA)
    for table, name in TABLES.items():
        db.execute(f"COPY {table} FROM '{os.path.join(csv, name)}' (HEADER true)")
    db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="the directory of `segmentd generate --format csv`")
    parser.add_argument("--segmentd", required=True, help="host:port of a server holding the tenant")
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--pg-dsn", help="PostgreSQL to load and query (skipped without it)")
    parser.add_argument("--duckdb", help="DuckDB file to load and query (skipped without it)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per count")
    parser.add_argument("--label", default="", help="what to call this run in the table")
    args = parser.parse_args()

    count_segmentd = segmentd_client(args.segmentd)
    engines = [("segmentd", lambda rule, sql: count_segmentd(args.tenant, rule))]
    loads = {}
    if args.pg_dsn:
        import psycopg

        t = time.perf_counter()
        load_postgres(args.pg_dsn, args.csv)
        loads["PostgreSQL"] = time.perf_counter() - t
        pg = psycopg.connect(args.pg_dsn, autocommit=True)
        engines.append(("PostgreSQL", lambda rule, sql: pg.execute(sql).fetchone()[0]))
    if args.duckdb:
        import duckdb

        t = time.perf_counter()
        load_duckdb(args.duckdb, args.csv)
        loads["DuckDB"] = time.perf_counter() - t
        duck = duckdb.connect(args.duckdb, read_only=True)
        engines.append(("DuckDB", lambda rule, sql: duck.execute(sql).fetchone()[0]))
    for name, seconds in loads.items():
        print(f"{name}: loaded and indexed in {seconds:.0f} s", file=sys.stderr)

    versions = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    print(f"\n{args.label} {os.cpu_count()} cores, {versions}; median of repeated counts "
          "(segmentd's first count too: it fills the clause cache), ratio = engine / segmentd\n")
    header = "| audience | count | segmentd, first |" + "".join(f" {name} |" for name, _ in engines)
    header += "".join(f" {name} / segmentd |" for name, _ in engines[1:])
    print(header)
    print("|" + " --- |" * (3 + 2 * len(engines) - 1))
    mismatches = 0
    for label, rule, sql in RULES:
        times, counts, firsts = [], [], []
        for name, run in engines:
            first, seconds, count = timed(lambda: run(rule, sql), args.budget)
            firsts.append(first)
            times.append(seconds)
            counts.append(count)
        agree = len(set(counts)) == 1
        mismatches += not agree
        shown = str(counts[0]) if agree else " / ".join(map(str, counts)) + " (DIFFER)"
        row = f"| {label} | {shown} | {firsts[0] * 1000:.2f} ms |"
        row += "".join(f" {t * 1000:.2f} ms |" for t in times)
        row += "".join(f" {t / times[0]:.0f}× |" for t in times[1:])
        print(row, flush=True)
    if mismatches:
        sys.exit(f"{mismatches} audiences counted differently")


if __name__ == "__main__":
    main()
