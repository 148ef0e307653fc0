"""Hostile requests against a real segmentd, from a second, independent client.

The Rust tests talk to segmentd through tonic, the library it is built on;
this file talks to it through Python's grpcio and sends what a careless or
malicious client would: rules too long or too deep, invalid UTF-8 and
broken protobuf built byte by byte, absurd amounts and times, forged page
tokens, oversized batches and messages, and other tenants' keys.

It starts `segmentd serve` with keys on in a fresh data directory, creates
the tenants `victim` and `other`, writes a few customers and events into
`victim` (keeping a model of them here), and records what some counts,
pages and segments answer. Then every hostile request goes out with the
gRPC codes that API.md, RULES.md and the README allow for it, and each
mismatch is listed. Afterwards the server must still be SERVING, alive,
answer every recorded read exactly as before, hold nothing in `other`, and
exit 0 on SIGTERM.

`scripts/hostile.sh` installs grpcio, generates the stubs and runs this;
by hand: `python hostile.py --bin target/debug/segmentd --stubs DIR`, with
DIR holding stubs generated from proto/segmentd/v1/segmentd.proto.
"""

import argparse
import base64
import ctypes
import datetime
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

# Every call has a deadline, so a server that hangs fails the run instead of
# stalling it.
CALL_TIMEOUT = 30.0
MIB = 1024 * 1024
# The evaluation instant of the recorded reads, so windows stay put between
# the recording and the check.
AS_OF = "2026-06-30T12:00:00Z"

# A request beyond a documented limit (rule size, depth, nodes, IN values,
# batch items, page sizes): API.md says RESOURCE_EXHAUSTED "for limits" and
# INVALID_ARGUMENT "for bad input", and such a request is both; the README's
# Limits allow either ("Over a limit the answer is RESOURCE_EXHAUSTED ... or
# INVALID_ARGUMENT"), so either is taken; the table shows which one came.
LIMIT = {"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}
INVALID = {"INVALID_ARGUMENT"}
DENIED = {"PERMISSION_DENIED"}
UNAUTHENTICATED = {"UNAUTHENTICATED"}
OK = {"OK"}
OUT_OF_RANGE = {"OUT_OF_RANGE"}
NOT_FOUND = {"NOT_FOUND"}


# --------------------------------------------------------------- wire format


def varint(value):
    """A protobuf varint; a negative value as the ten bytes of its int64."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def tag(field, wire_type):
    return varint(field << 3 | wire_type)


def ld(field, payload):
    """Field `field`, length-delimited: a string, bytes or a nested message."""
    if isinstance(payload, str):
        payload = payload.encode()
    return tag(field, 2) + varint(len(payload)) + payload


def vi(field, value):
    """Field `field` as a varint."""
    return tag(field, 0) + varint(value)


def seconds_of(text):
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def timestamp(seconds, nanos=0):
    return vi(1, seconds) + vi(2, nanos)


# Structured rules by hand (segmentd.proto: Rule, Predicate and friends), for
# trees and values that Python's protobuf would not send.
def predicate(field, body=b""):
    """Rule{predicate{<field>: body}}."""
    return ld(4, ld(field, body))


OPTED_IN = predicate(1)


def rule_not(rule):
    return ld(3, rule)


def rule_and(*rules):
    return ld(1, b"".join(ld(1, rule) for rule in rules))


def rule_set(field, values):
    """`tag` (1), `state` (2), `timezone` (3) or `klaviyo_list` (4) IN values."""
    return predicate(3, vi(1, field) + b"".join(ld(2, value) for value in values))


def rule_customers(ids):
    return predicate(6, b"".join(ld(1, customer_id) for customer_id in ids))


def ordered_within(amount, unit):
    """`ordered WITHIN <amount><unit>`, unit 1 hours, 2 days, 3 weeks."""
    return predicate(2, vi(1, 1) + ld(3, ld(1, vi(1, amount) + vi(2, unit))))


def spent(comparison, value, upper=None):
    """`spent <comparison> value`; comparison 6 is >=, 7 BETWEEN."""
    body = vi(1, 1) + vi(2, comparison) + vi(3, value)
    return predicate(4, body + (vi(4, upper) if upper is not None else b""))


def nots(count, rule=OPTED_IN):
    for _ in range(count):
        rule = rule_not(rule)
    return rule


def count_body(rule=None, rule_text=None, tenant="victim", as_of=AS_OF, extra=b""):
    """A CountAudienceRequest with a structured rule or a text."""
    body = ld(1, tenant)
    if rule is not None:
        body += ld(3, rule)
    if rule_text is not None:
        body += ld(2, rule_text)
    if as_of is not None:
        body += ld(5, timestamp(seconds_of(as_of)))
    return body + extra


# -------------------------------------------------------------------- model

STATES = {"ca": "CA", "california": "CA", "ny": "NY", "new york": "NY", "tx": "TX"}

# In the order they first reach segmentd (two batches); the event for c09
# then creates it. The 256-byte id is the longest allowed.
CUSTOMERS = [
    {"id": "c01", "opted_in": True, "tags": ["VIP "], "state": "California"},
    {"id": "c02", "opted_in": False, "tags": ["gift"], "state": "NY"},
    {"id": "c03", "opted_in": True, "state": "new york"},
    {"id": "c04", "opted_in": True, "tags": ["vip", "Gift"]},
    {"id": "c05", "opted_in": False},
    {"id": "c06", "opted_in": True, "state": "TX", "lifetime_spend_cents": 50_000},
    {"id": "c07"},
    {"id": "c08", "opted_in": True, "tags": ["Vip"]},
    {"id": "ç-10", "opted_in": True},
    {"id": "x" * 256, "opted_in": False},
]
FIRST_BATCH = 4

EVENTS = [
    ("o-1", "c01", "2026-06-20T10:00:00Z", "order", 4_999),
    ("o-2", "c01", "2026-03-01T09:00:00Z", "order", 5_001),
    ("o-3", "c02", "2026-06-29T15:00:00Z", "order", 15_000),
    ("o-4", "c04", "2025-12-31T23:00:00Z", "order", 1_000),
    ("o-5", "c09", "2026-05-15T08:00:00Z", "order", 9_999),
    ("m-1", "c03", "2026-06-28T12:00:00Z", "message", None),
    ("k-1", "c08", "2026-06-25T12:00:00Z", "click", "bf-2026"),
]

EVERYONE = "opted_in OR NOT opted_in"
SEGMENT_ID = "hostile-vips"
SEGMENT_RULE = 'tag = "vip" OR spent >= 100'


class Model:
    """What was written to `victim`, and rules evaluated on it naively."""

    def __init__(self):
        self.order = [c["id"] for c in CUSTOMERS]
        self.customers = {c["id"]: dict(c) for c in CUSTOMERS}
        for _, customer_id, when, kind, value in EVENTS:
            if customer_id not in self.customers:
                self.order.append(customer_id)
                self.customers[customer_id] = {"id": customer_id}
            events = self.customers[customer_id].setdefault("events", [])
            events.append((kind, seconds_of(when), value))

    def members(self, holds):
        return [i for i in self.order if holds(self.customers[i])]

    @staticmethod
    def tags(c):
        return {t.strip().lower() for t in c.get("tags", [])}

    @staticmethod
    def state(c):
        return STATES.get(c["state"].lower()) if "state" in c else None

    @staticmethod
    def order_times(c):
        return [t for kind, t, _ in c.get("events", []) if kind == "order"]

    @staticmethod
    def spent(c):
        return sum(v for kind, _, v in c.get("events", []) if kind == "order")

    @staticmethod
    def did(c, kind):
        return any(k == kind for k, _, _ in c.get("events", []))

    def opted_in(self):
        return self.members(lambda c: c.get("opted_in", False))

    def not_opted_in(self):
        return self.members(lambda c: not c.get("opted_in", False))

    def vip(self):
        return self.members(lambda c: "vip" in self.tags(c))

    def ever_ordered(self):
        return self.members(lambda c: bool(self.order_times(c)))

    def rules(self):
        """(rule text, members in page order) for the recorded reads."""
        instant = seconds_of(AS_OF)
        # `WITHIN 30d` at AS_OF, in UTC: from 00:00 29 days back to the instant.
        start = instant - instant % 86_400 - 29 * 86_400
        first_half = (seconds_of("2026-01-01T00:00:00Z"), seconds_of("2026-07-01T00:00:00Z"))
        return [
            ("opted_in", self.opted_in()),
            ("NOT opted_in", self.not_opted_in()),
            ('tag = "vip"', self.vip()),
            ('tag IN ("gift", "nobody")', self.members(lambda c: "gift" in self.tags(c))),
            ("spent >= 100", self.members(lambda c: self.spent(c) >= 10_000)),
            ("spent > 100", self.members(lambda c: self.spent(c) > 10_000)),
            (
                "ordered BETWEEN 2026-01-01 AND 2026-06-30",
                self.members(
                    lambda c: any(first_half[0] <= t < first_half[1] for t in self.order_times(c))
                ),
            ),
            (
                'state IN ("CA", "New York")',
                self.members(lambda c: self.state(c) in {"CA", "NY"}),
            ),
            (
                "ordered WITHIN 30d",
                self.members(lambda c: any(start <= t <= instant for t in self.order_times(c))),
            ),
            (
                "lifetime_spend > 250",
                self.members(lambda c: c.get("lifetime_spend_cents", 0) > 25_000),
            ),
            (
                "messaged OR clicked",
                self.members(lambda c: self.did(c, "message") or self.did(c, "click")),
            ),
            (EVERYONE, list(self.order)),
        ]

    def segment(self):
        """The saved segment's members: (rule ∪ included) − excluded."""
        rule = {i for i in self.order if i in self.vip() or self.spent(self.customers[i]) >= 10_000}
        return [i for i in self.order if (i in rule or i == "c05") and i != "c08"]


# ------------------------------------------------------------------- server

try:
    # Loaded before any fork: loading a library in a forked child can deadlock.
    LIBC = ctypes.CDLL(None)
except OSError:
    LIBC = None
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Runs in the child before exec: if this script dies, so does the server."""
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def first(stream):
    """The first message of a server stream, which is then cancelled."""
    try:
        return next(stream)
    finally:
        stream.cancel()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`segmentd serve` with keys on, in a data directory of its own."""

    def __init__(self, binary, workdir):
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A throwaway key; the prefix keeps it clear of `sgd_`, which segmentd
        # refuses for the admin key.
        self.admin_key = "hostile-admin-" + secrets.token_urlsafe(32)
        self.log_path = os.path.join(workdir, "segmentd.log")
        self.log = open(self.log_path, "wb")
        command = [
            binary,
            "serve",
            "--listen", self.address,
            "--data", os.path.join(workdir, "data"),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--admin-key", self.admin_key,
        ]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
        )

    def alive(self):
        return self.process.poll() is None

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self):
        if self.alive():
            self.process.kill()
            self.process.wait()


# -------------------------------------------------------------------- cases


def clean(text):
    """A message on one line, control characters shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def summary(response):
    """A short account of an answer that should not have come."""
    if isinstance(response, bytes):
        return f"{len(response)} bytes"
    return " ".join(str(response).split()) or "{} (every field empty)"


def code_name(code):
    return code.name if code is not None else "NONE"


class Results:
    """Every case's outcome, printed as a table at the end."""

    def __init__(self):
        self.rows = []  # (case, expected, got, message, ok)

    def run(self, case, expected, call, check=None):
        """Sends one request and notes whether its code is one of `expected`.

        `call` returns the response or raises grpc.RpcError; `check`, given an
        OK response, says what is wrong with it, or returns None.
        """
        import grpc

        expected_text = "|".join(sorted(expected))
        try:
            response = call()
        except grpc.RpcError as error:
            got, message = code_name(error.code()), error.details() or ""
        except Exception as error:  # the client itself failed: a fault of this script
            got, message = "CLIENT-ERROR", f"{type(error).__name__}: {error}"
        else:
            got = "OK"
            message = "" if "OK" in expected else f"answered: {summary(response)}"
            problem = check(response) if check and "OK" in expected else None
            if problem:
                self.rows.append((case, expected_text, got, f"wrong answer: {problem}", False))
                return
        self.rows.append((case, expected_text, got, message, got in expected))

    def mismatches(self):
        return [row for row in self.rows if not row[4]]

    def print_table(self):
        width = max(len(row[0]) for row in self.rows)
        print(f"\n  {'case':<{width}}  {'expected':<40}  {'got':<20}  message")
        print("-" * (width + 140))
        for case, expected, got, message, ok in self.rows:
            shown = clean(message)
            if len(shown) > 110:
                shown = shown[:107] + "..."
            mark = "  " if ok else "!!"
            print(f"{mark}{case:<{width}}  {expected:<40}  {got:<20}  {shown}")
        print(f"\n{len(self.rows)} cases, {len(self.mismatches())} mismatches")


# --------------------------------------------------------------------- test


class Hostile:
    def __init__(self, args, stubs):
        import grpc

        self.grpc = grpc
        self.pb, pb_grpc, self.health_pb2, health_grpc, self.reflection_pb2 = stubs
        self.workdir = tempfile.mkdtemp(prefix="segmentd-hostile-")
        self.server = Server(args.bin, self.workdir)
        self.channel = grpc.insecure_channel(
            self.server.address,
            options=[
                ("grpc.max_send_message_length", 64 * MIB),
                ("grpc.max_receive_message_length", 64 * MIB),
            ],
        )
        self.segments = pb_grpc.SegmentServiceStub(self.channel)
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)
        self.results = Results()
        self.run = self.results.run
        self.failures = []  # checks outside the table
        self.model = Model()
        self.keys = {}
        self.python_protobuf_deep = "was not tried"

    # -- helpers

    @staticmethod
    def auth(key):
        return (("authorization", f"Bearer {key}"),)

    def victim(self):
        return self.auth(self.keys["victim"])

    def other(self):
        return self.auth(self.keys["other"])

    def admin_md(self):
        return self.auth(self.server.admin_key)

    def call(self, rpc, request, md=None):
        """A call of the segment service to make later, with victim's key by default."""
        method = getattr(self.segments, rpc)
        md = self.victim() if md is None else md
        return lambda: method(request, metadata=md, timeout=CALL_TIMEOUT)

    def admin_call(self, rpc, request, md=None):
        """A call of the admin service, with the admin key by default."""
        method = getattr(self.admin, rpc)
        md = self.admin_md() if md is None else md
        return lambda: method(request, metadata=md, timeout=CALL_TIMEOUT)

    def raw(self, rpc, body, md=None, service="SegmentService"):
        """A unary call that sends `body` as it is and returns bytes."""
        method = self.channel.unary_unary(
            f"/segmentd.v1.{service}/{rpc}", request_serializer=None, response_deserializer=None
        )
        md = self.victim() if md is None else md
        return lambda: method(body, metadata=md, timeout=CALL_TIMEOUT)

    def now(self, rpc, request, md=None):
        return self.call(rpc, request, md)()

    def ts(self, text):
        from google.protobuf.timestamp_pb2 import Timestamp

        return Timestamp(seconds=seconds_of(text))

    def count_text(self, rule_text):
        request = self.pb.CountAudienceRequest(tenant="victim", rule_text=rule_text)
        request.as_of.CopyFrom(self.ts(AS_OF))
        return self.call("CountAudience", request)

    def count_rule(self, rule):
        return self.raw("CountAudience", count_body(rule))

    def counts(self, members):
        """A check that an OK CountAudience answer counts `members`."""

        def check(response):
            if isinstance(response, bytes):
                response = self.pb.CountAudienceResponse.FromString(response)
            if response.count != len(members):
                return f"count {response.count}, expected {len(members)}"
            return None

        return check

    def fail(self, what):
        print(f"FAILED: {what}", flush=True)
        self.failures.append(what)

    # -- before the hostile phase

    def wait_serving(self):
        deadline = time.monotonic() + 30
        request = self.health_pb2.HealthCheckRequest(service="")
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise SystemExit(f"segmentd exited at start:\n{self.server.log_tail()}")
            try:
                answer = self.health.Check(request, timeout=1)
                if answer.status == self.health_pb2.HealthCheckResponse.SERVING:
                    return
            except self.grpc.RpcError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"segmentd not SERVING within 30 s:\n{self.server.log_tail()}")

    def set_up_tenants(self):
        pb = self.pb
        for name in ("victim", "other"):
            self.admin_call("CreateTenant", pb.CreateTenantRequest(tenant=name))()
            made = self.admin_call("CreateApiKey", pb.CreateApiKeyRequest(tenant=name))()
            self.keys[name] = made.secret
        # A second key of victim's, revoked in the hostile phase.
        made = self.admin_call("CreateApiKey", pb.CreateApiKeyRequest(tenant="victim"))()
        self.keys["revoked"] = made.secret
        self.revoked_key_id = made.api_key.key_id

    def seed(self):
        pb = self.pb

        def customer(c):
            message = pb.Customer(customer_id=c["id"], tags=c.get("tags", []))
            for field in ("opted_in", "state", "lifetime_spend_cents"):
                if field in c:
                    setattr(message, field, c[field])
            return message

        for batch in (CUSTOMERS[:FIRST_BATCH], CUSTOMERS[FIRST_BATCH:]):
            customers = [customer(c) for c in batch]
            request = pb.UpsertCustomersRequest(tenant="victim", customers=customers)
            self.now("UpsertCustomers", request)

        def event(event_id, customer_id, when, kind, value):
            message = pb.Event(event_id=event_id, customer_id=customer_id, time=self.ts(when))
            if kind == "order":
                message.order.value_cents = value
            elif kind == "message":
                message.message.SetInParent()
            else:
                message.click.broadcast_id = value
            return message

        events = [event(*e) for e in EVENTS]
        recorded = self.now("RecordEvents", pb.RecordEventsRequest(tenant="victim", events=events))
        if recorded.recorded_count != len(EVENTS):
            self.fail(f"RecordEvents recorded {recorded.recorded_count}, not {len(EVENTS)}")
        # A replayed event id changes nothing, whatever the event now says.
        replay = pb.Event(event_id="o-1", customer_id="c05", time=self.ts(AS_OF))
        replay.order.value_cents = 1
        again = self.now("RecordEvents", pb.RecordEventsRequest(tenant="victim", events=[replay]))
        if (again.recorded_count, again.duplicate_count) != (0, 1):
            self.fail(f"a replayed event id was recorded: {again}")

        segment = pb.Segment(
            title="VIPs and big spenders",
            rule_text=SEGMENT_RULE,
            included_customer_ids=["c05"],
            excluded_customer_ids=["c08"],
        )
        create = pb.CreateSegmentRequest(tenant="victim", segment_id=SEGMENT_ID, segment=segment)
        self.now("CreateSegment", create)
        segment = pb.Segment(title="Recent buyers", rule_text="ordered WITHIN 30d")
        create = pb.CreateSegmentRequest(tenant="victim", segment_id="recent", segment=segment)
        self.now("CreateSegment", create)

    def record(self):
        """Every read whose answer must not change, as (name, answer) pairs."""
        pb, as_of = self.pb, self.ts(AS_OF)
        answers = []
        for rule_text, _ in self.model.rules():
            request = pb.CountAudienceRequest(tenant="victim", rule_text=rule_text, as_of=as_of)
            answers.append((f"count {rule_text}", self.now("CountAudience", request)))
        request = pb.CountAudienceRequest(tenant="victim", segment_id=SEGMENT_ID, as_of=as_of)
        answers.append(("count segment", self.now("CountAudience", request)))
        for name, audience, page_size in (
            ("everyone", {"rule_text": EVERYONE}, 3),
            ("segment", {"segment_id": SEGMENT_ID}, 2),
        ):
            token = ""
            for page in range(20):
                request = pb.ResolveSegmentRequest(
                    tenant="victim", as_of=as_of, page_size=page_size, page_token=token, **audience
                )
                answer = self.now("ResolveSegment", request)
                answers.append((f"resolve {name} page {page}", answer))
                token = answer.next_page_token
                if not token:
                    break
        for segment_id in (SEGMENT_ID, "recent"):
            request = pb.GetSegmentRequest(tenant="victim", segment_id=segment_id)
            answers.append((f"get {segment_id}", self.now("GetSegment", request)))
        request = pb.ListSegmentsRequest(tenant="victim", show_archived=True)
        answers.append(("list segments", self.now("ListSegments", request)))
        answers.append(("tenant", self.now("GetTenant", pb.GetTenantRequest(tenant="victim"))))
        request = pb.ExportAudienceRequest(tenant="victim", rule_text=EVERYONE, as_of=as_of)
        parts = self.segments.ExportAudience(request, metadata=self.victim(), timeout=CALL_TIMEOUT)
        answers.append(("export everyone", [i for part in parts for i in part.customer_ids]))
        return answers

    def check_against_model(self, answers):
        """The recorded answers agree with the model computed here."""
        model, by_name = self.model, dict(answers)
        for rule_text, members in model.rules():
            got = by_name[f"count {rule_text}"].count
            if got != len(members):
                self.fail(f"`{rule_text}` counts {got}, the model {len(members)}: {members}")
        for name, members in (("everyone", model.order), ("segment", model.segment())):
            pages = [a for n, a in answers if n.startswith(f"resolve {name} ")]
            ids = [i for page in pages for i in page.customer_ids]
            if ids != members:
                self.fail(f"pages of {name} list {ids}, the model {members}")
            if any(page.total_count != len(members) for page in pages):
                self.fail(f"a page of {name} has a total_count other than {len(members)}")
        if by_name["count segment"].count != len(model.segment()):
            got = by_name["count segment"].count
            self.fail(f"the segment counts {got}, the model {model.segment()}")
        if by_name["export everyone"] != model.order:
            self.fail("the export of everyone differs from the model's order")
        if by_name["tenant"].customer_count != len(model.order):
            got = by_name["tenant"].customer_count
            self.fail(f"victim has {got} customers, not {len(model.order)}")

    # -- the hostile phase

    def rule_texts(self):
        run, text, m = self.run, self.count_text, self.model

        # Size: 64 KiB.
        long_rule = ("opted_in OR " * 90_000)[: MIB - 8] + "opted_in"
        run("rule_text 1 MiB", LIMIT, text(long_rule))
        run("rule_text 100 KiB", LIMIT, text("opted_in OR " * 8_533 + "opted_in"))
        run("rule_text 1 MiB of one token", LIMIT, text("a" * MIB))
        # Depth: 32 levels; 31 NOTs over a qualifier are 32.
        run("NOT x31 opted_in (depth 32)", OK,
            text("NOT " * 31 + "opted_in"), self.counts(m.not_opted_in()))
        run("NOT x32 opted_in (depth 33)", LIMIT, text("NOT " * 32 + "opted_in"))
        run("NOT x10000 opted_in", LIMIT, text("NOT " * 10_000 + "opted_in"))
        # Parentheses only group: `((x))` is the tree `x`. The docs do not say
        # whether the depth limit counts them, so a parser that takes them
        # without recursing may also answer, with the right count.
        for depth in (10_000, 30_000):
            run(f"(((( x{depth} opted_in ))))", LIMIT | OK,
                text("(" * depth + "opted_in" + ")" * depth), self.counts(m.opted_in()))
        run("NOT ( x10000 nested", LIMIT, text("NOT (" * 10_000 + "opted_in" + ")" * 10_000))
        run("x AND (x AND (... 4000 deep", LIMIT,
            text("opted_in AND (" * 4_000 + "opted_in" + ")" * 4_000))
        run("unbalanced (((( x10000", INVALID, text("(" * 10_000 + "opted_in"))
        run("unbalanced )))) x10000", INVALID, text("opted_in" + ")" * 10_000))
        # Nodes: 1,000. Distinct children, so no deduplication hides them.
        tags = ['tag = "vip"'] + [f'tag = "t{i}"' for i in range(998)]
        run("OR of 999 qualifiers (1000 nodes)", OK, text(" OR ".join(tags)), self.counts(m.vip()))
        run("OR of 1000 qualifiers (1001 nodes)", LIMIT, text(" OR ".join(tags + ['tag = "t999"'])))
        # IN lists: 10,000 values; three-letter ones keep 10,001 under 64 KiB.
        letters = "abcdefghijklmnopqrstuvwxyz0123456789"
        values = [a + b + c for a in letters for b in letters for c in letters][:10_001]
        tag_in = lambda values: "tag IN (" + ",".join(f'"{v}"' for v in values) + ")"  # noqa: E731
        run("tag IN 10000 values", OK, text(tag_in(values[:9_999] + ["vip"])), self.counts(m.vip()))
        run("tag IN 10001 values (under 64 KiB)", LIMIT, text(tag_in(values)))
        run("tag IN 100000 values", LIMIT, text(tag_in(f"v{i}" for i in range(100_000))))
        # Unknown qualifiers and bad syntax or values.
        for name, rule_text in [
            ("unknown qualifier", 'favourite_colour = "red"'),
            ("unknown bare word", "opted_in AND bogus"),
            ("unknown window unit", "ordered WITHIN 30y"),
            ("space inside a duration", "ordered WITHIN 30 d"),
            ("dangling AND", "opted_in AND"),
            ("empty rule_text", ""),
            ("blank rule_text", "   \n\t "),
            ("unterminated string", 'tag = "vip'),
            ("line break inside a string", 'tag = "v\nip"'),
            ("backslash at the end", 'tag = "\\'),
            ("13-digit amount", "spent >= 1000000000000"),
            ("three decimals", "spent >= 1.999"),
            ("fractional order_count", "order_count >= 1.5"),
            ("unknown state", 'state = "Calfornia"'),
            ("unknown time zone", 'timezone = "Mars/Olympus_Mons"'),
            ("BETWEEN backwards", "spent BETWEEN 100 AND 50"),
            ("date that does not exist", "ordered SINCE 2026-02-30"),
            ("window dates backwards", "ordered BETWEEN 2026-03-31 AND 2026-03-01"),
        ]:
            run(f"rule: {name}", INVALID, text(rule_text))
        # Windows.
        run("WITHIN 0d", INVALID, text("ordered WITHIN 0d"))
        run("WITHIN 0h", INVALID, text("ordered WITHIN 0h"))
        run("WITHIN -3d", INVALID, text("ordered WITHIN -3d"))
        # Beyond the structured form's uint32, so no tree could carry them.
        run("WITHIN 99999999999d", INVALID, text("ordered WITHIN 99999999999d"))
        run("WITHIN 4294967296w", INVALID, text("ordered WITHIN 4294967296w"))
        # The largest uint32 reaches back millions of years, before 1970:
        # refusing it and counting everyone who ever ordered are both sound.
        for unit in "hdw":
            run(f"WITHIN 4294967295{unit}", INVALID | OK,
                text(f"ordered WITHIN 4294967295{unit}"), self.counts(m.ever_ordered()))
        run("BEFORE 0001-01-01", INVALID | OK, text("ordered BEFORE 0001-01-01"), self.counts([]))
        run("SINCE 9999-12-31", INVALID | OK, text("ordered SINCE 9999-12-31"), self.counts([]))
        run("BETWEEN 0000-01-01 AND 9999-12-31", INVALID | OK,
            text("ordered BETWEEN 0000-01-01 AND 9999-12-31"), self.counts(m.ever_ordered()))
        # Control characters and NUL bytes between tokens.
        for name, rule_text in [
            ("NUL after the rule", "opted_in\x00"),
            ("NUL alone", "\x00"),
            ("NUL between tokens", "opted_in\x00AND opted_in"),
            ("BEL before the rule", "\x07opted_in"),
            ("ESC sequence", "\x1b[2Jopted_in"),
            ("DEL inside a keyword", "opt\x7fed_in"),
        ]:
            run(f"rule: {name}", INVALID, text(rule_text))
        # Inside a string the grammar takes anything but a quote, a backslash
        # or a line break; no customer has such a tag or id, so the value may
        # be refused or simply match no one.
        run("rule: NUL inside a tag string", INVALID | OK, text('tag = "v\x00ip"'), self.counts([]))
        run("rule: control char in customer IN", INVALID | OK,
            text('customer IN ("c01\x01")'), self.counts([]))
        # The README says FAILED_PRECONDITION "for a rule that names a missing
        # or archived segment" and NOT_FOUND "for an unknown tenant or
        # segment"; API.md keeps FAILED_PRECONDITION for a change that the
        # state refuses, and a count changes nothing. Either is taken.
        run("rule: segment that does not exist", {"FAILED_PRECONDITION", "NOT_FOUND"},
            text('segment = "no-such-segment"'))
        request = self.pb.CountAudienceRequest(tenant="victim", segment_id="no-such-segment")
        run("count a segment_id that does not exist", {"NOT_FOUND"},
            self.call("CountAudience", request))
        request = self.pb.CountAudienceRequest(tenant="victim")
        run("count with no audience", INVALID, self.call("CountAudience", request))
        # as_of outside 1970 ..= 9999, by hand past Python's own checks.
        for name, seconds, nanos in [
            ("as_of before 1970", -1, 0),
            ("as_of year 10000", 253_402_300_800, 0),
            ("as_of i64 min", -(2**63), 0),
            ("as_of i64 max", 2**63 - 1, 0),
            ("as_of nanos -1", 0, -1),
            ("as_of nanos 10^9", 0, 1_000_000_000),
        ]:
            body = ld(1, "victim") + ld(2, "ordered WITHIN 30d") + ld(5, timestamp(seconds, nanos))
            run(name, INVALID, self.raw("CountAudience", body))

    def structured_rules(self):
        run, rule, m = self.run, self.count_rule, self.model

        # First Python's own protobuf, building 5,000 levels inside the request
        # (copying a tree that deep in would make upb parse it, past its depth
        # limit of 100); the hand-made bytes below send it in any case.
        request = self.pb.CountAudienceRequest(tenant="victim")
        node = request.rule
        for _ in range(5_000):
            node = getattr(node, "not")
        node.predicate.opted_in.SetInParent()
        try:
            encoded = request.SerializeToString()
        except Exception as error:
            self.python_protobuf_deep = f"refused to encode it ({type(error).__name__}: {error})"
        else:
            self.python_protobuf_deep = f"encoded it ({len(encoded)} bytes)"
            run("Rule NOT x5000 (python protobuf)", LIMIT, self.raw("CountAudience", encoded))

        def ands(count):
            tree = OPTED_IN
            for _ in range(count):
                tree = rule_and(OPTED_IN, tree)
            return tree

        run("Rule NOT x31 (depth 32)", OK, rule(nots(31)), self.counts(m.not_opted_in()))
        run("Rule NOT x32 (depth 33)", LIMIT, rule(nots(32)))
        run("Rule NOT x60", LIMIT, rule(nots(60)))
        # Past prost's nesting limit of 100 the request does not decode, which
        # segmentd answers INVALID_ARGUMENT.
        run("Rule NOT x5000 (hand-made bytes)", LIMIT, rule(nots(5_000)))
        run("Rule NOT x100000 (hand-made bytes)", LIMIT, rule(nots(100_000)))
        run("Rule AND(x, AND(x, ...)) x5000", LIMIT, rule(ands(5_000)))
        run("Rule AND of 1000 children", LIMIT,
            rule(rule_and(*[rule_set(1, [f"t{i}"]) for i in range(1_000)])))
        # IN lists where no text limit stands in front of them.
        many = lambda prefix, n: [f"{prefix}{i}" for i in range(n)]  # noqa: E731
        run("Rule tag IN 10000 values", OK,
            rule(rule_set(1, ["vip"] + many("v", 9_999))), self.counts(m.vip()))
        run("Rule tag IN 10001 values", LIMIT, rule(rule_set(1, many("v", 10_001))))
        run("Rule tag IN 100000 values", LIMIT, rule(rule_set(1, many("v", 100_000))))
        run("Rule customer IN 100000 ids", LIMIT, rule(rule_customers(many("c", 100_000))))
        run("Rule klaviyo_list IN 100000 (under NOTs)", LIMIT,
            rule(nots(3, rule_set(4, many("l", 100_000)))))
        # Shapes and values that no text can write.
        for name, tree in [
            ("empty AND group", ld(1, b"")),
            ("empty OR group", ld(2, b"")),
            ("Rule with no node", b""),
            ("NOT of an empty Rule", rule_not(b"")),
            ("Predicate with no qualifier", ld(4, b"")),
            ("event kind unspecified", predicate(2)),
            ("event kind 99", predicate(2, vi(1, 99))),
            ("window WITHIN 0 days", ordered_within(0, 2)),
            ("window unit unspecified", ordered_within(3, 0)),
            ("window unit 99", ordered_within(3, 99)),
            ("window SINCE not a date", predicate(2, vi(1, 1) + ld(3, ld(3, "yesterday")))),
            ("created SINCE 2026-02-30", predicate(5, ld(3, "2026-02-30"))),
            ("set with no values", predicate(3, vi(1, 1))),
            ("set field unspecified", predicate(3, ld(2, "vip"))),
            ("state Calfornia", rule_set(2, ["Calfornia"])),
            ("spent >= -1", spent(6, -1)),
            ("spent >= 2^62", spent(6, 2**62)),
            ("spent BETWEEN 500 AND 100", spent(7, 500, 100)),
            ("comparison unspecified", spent(0, 1)),
            ("answered with empty ids", predicate(8)),
            ("presence field unspecified", predicate(9, vi(2, 1))),
            ("empty customer list", predicate(6)),
        ]:
            run(f"Rule: {name}", INVALID, rule(tree))
        # An empty id names no segment: refused as an id, or as a missing one.
        run("Rule: empty segment id", INVALID | {"FAILED_PRECONDITION"}, rule(predicate(7)))

    def broken_bytes(self):
        """Invalid UTF-8 and broken protobuf: undecodable, so INVALID_ARGUMENT."""
        run, raw, bad = self.run, self.raw, b"\xff\xfe"
        victim = ld(1, "victim")
        for name, rpc, body in [
            ("UTF-8: tenant 0xff 0xfe", "CountAudience", ld(1, bad) + ld(2, "opted_in")),
            ("UTF-8: rule_text 0xff 0xfe", "CountAudience", victim + ld(2, b"opted_in " + bad)),
            ("UTF-8: rule_text surrogate", "CountAudience", victim + ld(2, b'"\xed\xa0\x80"')),
            ("UTF-8: rule_text overlong NUL", "CountAudience", victim + ld(2, b"opted_in\xc0\x80")),
            ("UTF-8: customer_id 0xff 0xfe", "UpsertCustomers", victim + ld(2, ld(1, bad))),
            ("UTF-8: tag 0xff 0xfe", "UpsertCustomers", victim + ld(2, ld(1, "c01") + ld(6, bad))),
            ("UTF-8: event_id 0xff 0xfe", "RecordEvents", victim + ld(2, ld(1, bad) + ld(2, "c"))),
            ("UTF-8: segment title", "CreateSegment",
             victim + ld(2, "utf8-title") + ld(3, ld(2, bad) + ld(3, "opted_in"))),
            ("UTF-8: page_token", "ResolveSegment", victim + ld(2, EVERYONE) + ld(7, bad)),
            ("protobuf: length past the end", "UpsertCustomers",
             victim + tag(2, 2) + varint(1_000) + b"\x0a\x01c"),
            ("protobuf: tenant as a varint", "UpsertCustomers", vi(1, 7)),
            ("protobuf: field number 0", "UpsertCustomers", tag(0, 2) + varint(1) + b"x"),
            ("protobuf: customers as a varint", "UpsertCustomers", victim + b"\x10\xff\xff"),
            ("protobuf: group start without end", "UpsertCustomers", victim + tag(5, 3)),
            ("protobuf: 11-byte varint", "UpsertCustomers", victim + b"\x18" + b"\xff" * 11),
        ]:
            run(name, INVALID, raw(rpc, body))
        run("UTF-8: admin CreateTenant name", INVALID,
            raw("CreateTenant", ld(1, bad), self.admin_md(), "AdminService"))
        # Fields this server does not know are skipped, as protobuf says.
        unknown = ld(999, b"junk") + vi(998, 5)
        run("protobuf: unknown fields are skipped", OK,
            raw("CountAudience", count_body(rule_text="opted_in", extra=unknown)),
            self.counts(self.model.opted_in()))

    def writes(self):
        run, pb, Customer = self.run, self.pb, self.pb.Customer

        def upsert(*customers):
            request = pb.UpsertCustomersRequest(tenant="victim", customers=list(customers))
            return self.call("UpsertCustomers", request)

        def record(*events):
            return self.call("RecordEvents", pb.RecordEventsRequest(tenant="victim", events=events))

        def order(value, event_id="h-order"):
            event = pb.Event(event_id=event_id, customer_id="c-new", time=self.ts(AS_OF))
            event.order.value_cents = value
            return event

        def order_at(seconds, nanos=0):
            """An order whose time Python's protobuf would not let through."""
            event = ld(1, "h-time") + ld(2, "c-new") + ld(3, timestamp(seconds, nanos))
            return self.raw("RecordEvents", ld(1, "victim") + ld(2, event + ld(10, vi(1, 100))))

        # Amounts: 0 to 999,999,999,999.99.
        run("order value_cents -1", INVALID, record(order(-1)))
        run("order value_cents 2^62", INVALID, record(order(2**62)))
        run("order value_cents max + 1", INVALID, record(order(99_999_999_999_999 + 1)))
        run("order value_cents i64 min", INVALID, record(order(-(2**63))))
        cart = pb.Event(event_id="h-cart", customer_id="c-new", time=self.ts(AS_OF))
        cart.abandoned_cart.value_cents = -5
        run("abandoned_cart value_cents -5", INVALID, record(cart))
        run("lifetime_spend_cents -1", INVALID,
            upsert(Customer(customer_id="c-new", lifetime_spend_cents=-1)))
        run("lifetime_spend_cents 2^62", INVALID,
            upsert(Customer(customer_id="c-new", lifetime_spend_cents=2**62)))
        # Times: 1970-01-01 to 9999-12-31.
        run("event time 1969-12-31T23:59:59", INVALID, order_at(-1))
        run("event time year 1", INVALID, order_at(-62_135_596_800))
        run("event time year 10000", INVALID, order_at(253_402_300_800))
        run("event time i64 max", INVALID, order_at(2**63 - 1))
        run("event time i64 min", INVALID, order_at(-(2**63)))
        run("event time nanos -1", INVALID, order_at(1_700_000_000, -1))
        run("event time nanos 10^9", INVALID, order_at(1_700_000_000, 1_000_000_000))
        event = pb.Event(event_id="h-notime", customer_id="c-new", opt_in=pb.Event.OptIn())
        run("event without a time", INVALID, record(event))
        event = pb.Event(event_id="h-nokind", customer_id="c-new", time=self.ts(AS_OF))
        run("event without a kind", INVALID, record(event))
        for name, seconds in [("1969", -86_400), ("year 10000", 253_402_300_800)]:
            customer = Customer(customer_id="c-new")
            customer.create_time.seconds = seconds
            run(f"customer create_time {name}", INVALID, upsert(customer))
        # Ids: 1 to 256 bytes, no control characters.
        for name, customer_id in [
            ("empty customer_id", ""),
            ("customer_id 257 bytes", "x" * 257),
            ("customer_id 86 x 3-byte chars (258 bytes)", "€" * 86),
            ("customer_id 1 MiB", "x" * MIB),
            ("customer_id with NUL", "c\x00"),
            ("customer_id with newline", "c\n"),
            ("customer_id with DEL", "c\x7f"),
            ("customer_id with C1 NEL", "c\u0085"),
        ]:
            run(name, INVALID, upsert(Customer(customer_id=customer_id, opted_in=True)))
        for name, event_id in [("empty", ""), ("257 bytes", "e" * 257), ("NUL in", "e\x00")]:
            run(f"event_id {name}", INVALID, record(order(100, event_id=event_id)))
        event = pb.Event(event_id="h-cid", time=self.ts(AS_OF), opt_in=pb.Event.OptIn())
        run("event with empty customer_id", INVALID, record(event))
        event = pb.Event(event_id="h-click", customer_id="c-new", time=self.ts(AS_OF))
        event.click.broadcast_id = "b" * 257
        run("broadcast_id 257 bytes", INVALID, record(event))
        event = pb.Event(event_id="h-answer", customer_id="c-new", time=self.ts(AS_OF))
        event.answer.question_id, event.answer.answer = "size", "M"
        run("answer with empty experience_id", INVALID, record(event))
        for name, customer in [
            ("klaviyo list id 257 bytes", Customer(customer_id="c-new", klaviyo_lists=["l" * 257])),
            ("unknown state", Customer(customer_id="c-new", state="Calfornia")),
            ("unknown time zone", Customer(customer_id="c-new", time_zone="Mars/Olympus_Mons")),
        ]:
            run(name, INVALID, upsert(customer))
        run("257 tags on one customer", LIMIT,
            upsert(Customer(customer_id="c-new", tags=[f"t{i}" for i in range(257)])))
        # A batch with one bad item is refused whole: c-good must not appear.
        good = Customer(customer_id="c-good", opted_in=True)
        run("batch: good customer + bad one", INVALID, upsert(good, Customer(customer_id="")))
        good = pb.Event(event_id="h-good", customer_id="c-good", time=self.ts(AS_OF))
        good.order.value_cents = 100
        run("batch: good event + bad one", INVALID, record(good, order(-1)))
        # Batches: 10,000 items.
        many = range(10_001)
        run("UpsertCustomers 10001 customers", LIMIT,
            upsert(*[Customer(customer_id=f"bulk-{i}", opted_in=True) for i in many]))
        run("RecordEvents 10001 events", LIMIT, record(*[order(100, f"bulk-{i}") for i in many]))
        request = pb.DeleteCustomersRequest(tenant="victim", customer_ids=[f"n{i}" for i in many])
        run("DeleteCustomers 10001 ids", LIMIT, self.call("DeleteCustomers", request))
        keys = [pb.CustomerKey(customer_id=f"n{i}") for i in many]
        request = pb.MatchCustomersRequest(tenant="victim", keys=keys)
        run("MatchCustomers 10001 keys", LIMIT, self.call("MatchCustomers", request))
        # Unknown ids are no-ops, and an id no customer can have may be either
        # that or refused; the docs say nothing of an empty batch.
        request = pb.DeleteCustomersRequest(tenant="victim", customer_ids=[""])
        run("DeleteCustomers empty id", INVALID | OK, self.call("DeleteCustomers", request),
            lambda answer: f"deleted {answer.deleted_count}" if answer.deleted_count else None)
        run("UpsertCustomers empty batch", INVALID | OK, upsert(),
            lambda answer: str(answer) if answer.created_count + answer.updated_count else None)
        request = pb.UpdateTenantRequest(tenant="victim", time_zone="Mars/Olympus_Mons")
        run("UpdateTenant unknown time zone", INVALID, self.call("UpdateTenant", request))

    def segments_and_more(self):
        run, pb = self.run, self.pb

        def create(segment_id, title="x", **segment):
            segment = pb.Segment(title=title, **segment)
            request = pb.CreateSegmentRequest(
                tenant="victim", segment_id=segment_id, segment=segment
            )
            return self.call("CreateSegment", request)

        def update(version, mask, **segment):
            request = pb.UpdateSegmentRequest(
                tenant="victim",
                segment_id=SEGMENT_ID,
                version=version,
                segment=pb.Segment(**segment),
            )
            request.update_mask.paths.extend(mask)
            return self.call("UpdateSegment", request)

        deep = "NOT " * 10_000 + "opted_in"
        run("CreateSegment id taken", {"ALREADY_EXISTS"}, create(SEGMENT_ID, rule_text="opted_in"))
        run("CreateSegment empty id", INVALID, create("", rule_text="opted_in"))
        run("CreateSegment id 257 bytes", INVALID, create("s" * 257, rule_text="opted_in"))
        run("CreateSegment id with NUL", INVALID, create("s\x00", rule_text="opted_in"))
        run("CreateSegment without a rule", INVALID, create("h-norule"))
        run("CreateSegment NOT x10000", LIMIT, create("h-deep", rule_text=deep))
        long_rule = ("opted_in OR " * 90_000)[: MIB - 8] + "opted_in"
        run("CreateSegment rule_text 1 MiB", LIMIT, create("h-long", rule_text=long_rule))
        run("CreateSegment title 1 MiB", LIMIT, create("h-title", "t" * MIB, rule_text="opted_in"))
        run("CreateSegment naming a missing segment", {"FAILED_PRECONDITION"},
            create("h-missing", rule_text='segment = "no-such-segment"'))
        run("CreateSegment naming itself", {"FAILED_PRECONDITION"},
            create("h-self", rule_text='segment = "h-self"'))
        ids = [f"i{i}" for i in range(10_001)]
        run("CreateSegment 10001 included ids", LIMIT,
            create("h-include", rule_text="opted_in", included_customer_ids=ids))
        run("CreateSegment included empty id", INVALID,
            create("h-include", rule_text="opted_in", included_customer_ids=[""]))
        run("UpdateSegment stale version", {"ABORTED"}, update(999, ["title"], title="stolen"))
        run("UpdateSegment making a cycle", {"FAILED_PRECONDITION"},
            update(1, ["rule_text"], rule_text=f'segment = "{SEGMENT_ID}"'))
        run("UpdateSegment unknown mask path", INVALID, update(1, ["bogus"], title="stolen"))
        run("UpdateSegment rule NOT x10000", LIMIT, update(1, ["rule_text"], rule_text=deep))
        request = pb.GetSegmentRequest(tenant="victim", segment_id="no-such-segment")
        run("GetSegment that does not exist", {"NOT_FOUND"}, self.call("GetSegment", request))
        # A 10 KiB id names no segment: refused as an id, or not found.
        request = pb.GetSegmentRequest(tenant="victim", segment_id="s" * 10_240)
        run("GetSegment id 10 KiB", INVALID | {"NOT_FOUND"}, self.call("GetSegment", request))
        request = pb.ExplainMembershipRequest(
            tenant="victim", customer_id="c01", segment_ids=[SEGMENT_ID] * 101
        )
        run("ExplainMembership 101 segments", LIMIT, self.call("ExplainMembership", request))
        opted_in = pb.AudienceSpec(rule_text="opted_in")
        for size in (1, 9):
            request = pb.CountOverlapRequest(tenant="victim", audiences=[opted_in] * size)
            run(f"CountOverlap {size} audiences", LIMIT, self.call("CountOverlap", request))
        request = pb.DiffAudiencesRequest(
            tenant="victim", before=opted_in, after=pb.AudienceSpec(rule_text=EVERYONE),
            sample_size=1_001,
        )
        run("DiffAudiences sample 1001", LIMIT, self.call("DiffAudiences", request))

    def pages(self):
        run, pb, everyone = self.run, self.pb, self.model.order

        def resolve(token="", rule_text=EVERYONE, page_size=3, as_of=True, md=None, **audience):
            tenant = "other" if md is not None else "victim"
            request = pb.ResolveSegmentRequest(tenant=tenant, page_size=page_size, page_token=token)
            if audience:
                request.segment_id = audience["segment_id"]
            else:
                request.rule_text = rule_text
            if as_of:
                request.as_of.CopyFrom(self.ts(AS_OF))
            return self.segments.ResolveSegment(
                request, metadata=md or self.victim(), timeout=CALL_TIMEOUT
            )

        def forged(token, after=None, instant=None, payload=None):
            """The token with its position or instant replaced, its seal kept."""
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            head, body = raw[:9], raw[9:]
            if payload is None:
                old_after, old_instant = struct.unpack(">Iq", body)
                after = old_after if after is None else after
                payload = struct.pack(">Iq", after, old_instant if instant is None else instant)
            return base64.urlsafe_b64encode(head + payload).decode().rstrip("=")

        real = resolve().next_page_token
        opted_in_token = resolve(rule_text="opted_in", page_size=1).next_page_token
        segment_token = resolve(page_size=1, segment_id=SEGMENT_ID).next_page_token
        request = pb.ListSegmentsRequest(tenant="victim", page_size=1)
        listing = self.now("ListSegments", request).next_page_token
        if not (real and opted_in_token and segment_token and listing):
            self.fail("a first page gave no next_page_token to forge from")
            return
        raw_token = base64.urlsafe_b64decode(real + "==")
        version_2 = base64.urlsafe_b64encode(b"\x02" + raw_token[1:]).decode().rstrip("=")

        junk = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
        for name, token in [
            ("random base64", junk),
            ("10 KiB of junk", "A" * 10_240),
            ("10 KiB of punctuation", "!@#$%^&*()" * 1_024),
            ("truncated", real[:-4]),
            ("with padding appended", real + "=="),
            ("of another rule", opted_in_token),
            ("of a segment, on a rule", segment_token),
            ("of a listing, on a rule", listing),
            ("version byte 2", version_2),
            ("payload cut to 3 bytes", forged(real, payload=b"\x00\x00\x00")),
            ("payload 1 KiB", forged(real, payload=b"\x00" * 1_024)),
        ]:
            run(f"page_token {name}", INVALID, lambda token=token: resolve(token))
        request = pb.ListSegmentsRequest(tenant="victim", page_token=real)
        run("page_token of a rule, on ListSegments", INVALID, self.call("ListSegments", request))
        run("page_token of victim, on other", INVALID, lambda: resolve(real, md=self.other()))
        # The seal is a fingerprint, not a secret, so a caller can forge a
        # position in its own audience: one past the end is an empty last
        # page or a refusal; one at the start replays the first pages.
        run("forged token after = u32 max", INVALID | OK, lambda: resolve(forged(real, 2**32 - 1)),
            lambda page: f"page {list(page.customer_ids)}" if page.customer_ids else None)
        firsts = (everyone[:3], everyone[1:4])
        run("forged token after = 0", INVALID | OK, lambda: resolve(forged(real, 0)),
            lambda page: None if list(page.customer_ids) in firsts else f"page {page}")
        # Without as_of, later pages evaluate at the instant the token carries.
        # One outside 1970 ..= 9999 is no instant this server issues, and
        # as_of with the same value is refused, so the token must be too.
        # The widest windows are where instant minus window leaves i64.
        extremes = [("i64 min", -(2**63)), ("i64 max", 2**63 - 1)]
        for rule_text, instants in [
            ("ordered WITHIN 3650d", extremes + [("-1", -1), ("year 10000", 253_402_300_800)]),
            ("ordered WITHIN 4294967295w", extremes),
            ("created WITHIN 4294967295h", extremes),
            ("ordered SINCE 1970-01-01", extremes),
        ]:
            token = resolve(rule_text=rule_text, page_size=1, as_of=False).next_page_token
            if not token:
                self.fail(f"`{rule_text}`: a first page gave no next_page_token to forge from")
                continue
            for name, instant in instants:
                run(f"forged token instant {name} ({rule_text.split(' ', 1)[1]})", INVALID,
                    lambda token=token, rule_text=rule_text, instant=instant: resolve(
                        forged(token, instant=instant), rule_text, page_size=1, as_of=False))
        # Page sizes: 1,000 by default, 10,000 at most.
        run("page_size 10000", OK, lambda: resolve(page_size=10_000),
            lambda page: None if list(page.customer_ids) == everyone else f"page {page}")
        run("page_size 10001", LIMIT, lambda: resolve(page_size=10_001))
        run("page_size u32 max", LIMIT, lambda: resolve(page_size=2**32 - 1))
        body = ld(1, "victim") + ld(2, EVERYONE) + vi(6, -1)
        run("page_size -1 (as int64 varint)", LIMIT, self.raw("ResolveSegment", body))
        request = pb.ListSegmentsRequest(tenant="victim", page_size=1_001)
        run("ListSegments page_size 1001", LIMIT, self.call("ListSegments", request))

    def watches(self):
        """The change feed: bad segment lists, forged sequences, broken bytes."""
        run, pb, bad = self.run, self.pb, b"\xff\xfe"

        def watch(segment_ids, after=None, md=None):
            request = pb.WatchSegmentChangesRequest(tenant="victim", segment_ids=segment_ids)
            if after is not None:
                request.after_sequence = after
            method = self.segments.WatchSegmentChanges
            md = self.victim() if md is None else md
            # A refusal is the stream's first answer; an accepted watch would
            # run on, so read one message at most.
            return lambda: first(method(request, metadata=md, timeout=CALL_TIMEOUT))

        run("watch: no segments", INVALID, watch([]))
        run("watch: 101 segments", INVALID, watch([f"s{n}" for n in range(101)]))
        run("watch: 100,000 segments", LIMIT, watch([f"s{n}" for n in range(100_000)]))
        run("watch: empty segment id", INVALID, watch([SEGMENT_ID, ""]))
        run("watch: 1 MiB segment id", INVALID, watch(["s" * MIB]))
        run("watch: control character in id", INVALID, watch(["a\nb"]))
        run("watch: unknown segment", NOT_FOUND, watch(["no-such-segment"]))
        run("watch: after_sequence 2^64-1", OUT_OF_RANGE, watch([SEGMENT_ID], 2**64 - 1))
        run("watch: after_sequence 2^63", OUT_OF_RANGE, watch([SEGMENT_ID], 2**63))
        run("watch: other's key", DENIED, watch([SEGMENT_ID], md=self.other()))
        run("watch: no key", UNAUTHENTICATED, watch([SEGMENT_ID], md=()))
        method = self.channel.unary_stream(
            "/segmentd.v1.SegmentService/WatchSegmentChanges",
            request_serializer=None, response_deserializer=None)
        for name, body in [
            ("watch: UTF-8 segment id 0xff 0xfe", ld(1, "victim") + ld(2, bad)),
            ("watch: after_sequence as bytes", ld(1, "victim") + ld(2, SEGMENT_ID) + ld(3, b"x")),
        ]:
            run(name, INVALID,
                lambda body=body: first(method(body, metadata=self.victim(),
                                               timeout=CALL_TIMEOUT)))
        # A good watch starts with the segment's members (cause INITIAL).
        members = set(self.model.segment())

        def initial(response):
            got = set(response.entered_customer_ids)
            if response.segment_id != SEGMENT_ID or got != members:
                return f"initial members {sorted(got)}, expected {sorted(members)}"
            return None
        run("watch: a good one starts with the members", OK, watch([SEGMENT_ID]), initial)

    def sizes(self):
        """The 16 MiB request limit: RESOURCE_EXHAUSTED, as the README says and as
        gRPC's doc/statuscodes.md has it for a message "larger than configured
        limit" (tonic's own answer, OUT_OF_RANGE, is not)."""
        run, raw = self.run, self.raw
        exhausted = {"RESOURCE_EXHAUSTED"}

        def padded(size):
            return count_body(rule_text="opted_in", extra=ld(999, b"\x00" * size))

        run("CountAudience 15 MiB (unknown field)", OK,
            raw("CountAudience", padded(15 * MIB)), self.counts(self.model.opted_in()))
        run("CountAudience 16 MiB + 1 KiB", exhausted,
            raw("CountAudience", padded(16 * MIB + 1_024)))
        customer = ld(1, "c-huge") + ld(6, "t" * 1_000) * 17_500
        body = ld(1, "victim") + ld(2, customer)
        run("UpsertCustomers 17 MiB", exhausted, raw("UpsertCustomers", body))
        run("CountAudience 40 MiB", exhausted, raw("CountAudience", padded(40 * MIB)))
        # The admin service takes 1 MiB at most; this request is refused for
        # its size or for its name.
        request = self.pb.CreateTenantRequest(tenant="t" * (2 * MIB))
        run("admin CreateTenant 2 MiB name", LIMIT, self.admin_call("CreateTenant", request))

    def keys_and_tenants(self):
        run, pb = self.run, self.pb

        def requests(tenant="victim"):
            """One request of each segment RPC, each harmless had it run."""
            a_time = self.ts(AS_OF)
            return [
                ("CountAudience", pb.CountAudienceRequest(tenant=tenant, rule_text="opted_in")),
                ("ResolveSegment", pb.ResolveSegmentRequest(tenant=tenant, rule_text=EVERYONE)),
                ("ExportAudience", pb.ExportAudienceRequest(tenant=tenant, rule_text=EVERYONE)),
                ("WatchSegmentChanges", pb.WatchSegmentChangesRequest(
                    tenant=tenant, segment_ids=[SEGMENT_ID])),
                ("GetSegment", pb.GetSegmentRequest(tenant=tenant, segment_id=SEGMENT_ID)),
                ("ListSegments", pb.ListSegmentsRequest(tenant=tenant)),
                ("GetTenant", pb.GetTenantRequest(tenant=tenant)),
                ("ExplainMembership", pb.ExplainMembershipRequest(
                    tenant=tenant, customer_id="c01", segment_ids=[SEGMENT_ID])),
                ("ListCustomerSegments", pb.ListCustomerSegmentsRequest(
                    tenant=tenant, customer_id="c01")),
                ("MatchCustomers", pb.MatchCustomersRequest(
                    tenant=tenant, keys=[pb.CustomerKey(customer_id="c01")])),
                ("UpsertCustomers", pb.UpsertCustomersRequest(
                    tenant=tenant, customers=[pb.Customer(customer_id="c01", opted_in=False)])),
                ("RecordEvents", pb.RecordEventsRequest(tenant=tenant, events=[pb.Event(
                    event_id="h-in", customer_id="c01", time=a_time, opt_out=pb.Event.OptOut())])),
                ("DeleteCustomers", pb.DeleteCustomersRequest(tenant=tenant, customer_ids=["c01"])),
                ("CreateSegment", pb.CreateSegmentRequest(
                    tenant=tenant, segment_id="h-in", segment=pb.Segment(rule_text="opted_in"))),
                ("UpdateSegment", pb.UpdateSegmentRequest(
                    tenant=tenant, segment_id=SEGMENT_ID, version=1,
                    segment=pb.Segment(title="x"))),
                ("ArchiveSegment", pb.ArchiveSegmentRequest(tenant=tenant, segment_id=SEGMENT_ID)),
                ("UpdateTenant", pb.UpdateTenantRequest(tenant=tenant, time_zone="Asia/Tokyo")),
                ("CreateSnapshot", pb.CreateSnapshotRequest(
                    tenant=tenant, snapshot_id="h-in", rule_text=EVERYONE)),
                ("CountOverlap", pb.CountOverlapRequest(tenant=tenant, audiences=[
                    pb.AudienceSpec(rule_text="opted_in"), pb.AudienceSpec(rule_text=EVERYONE)])),
            ]

        def call(rpc, request, md):
            if rpc == "ExportAudience":
                method = self.segments.ExportAudience
                return lambda: list(method(request, metadata=md, timeout=CALL_TIMEOUT))
            if rpc == "WatchSegmentChanges":
                method = self.segments.WatchSegmentChanges
                return lambda: first(method(request, metadata=md, timeout=CALL_TIMEOUT))
            return self.call(rpc, request, md)

        for rpc, request in requests():
            run(f"other's key: {rpc} on victim", DENIED, call(rpc, request, self.other()))
        for rpc, request in requests():
            run(f"admin key: {rpc}", DENIED, call(rpc, request, self.admin_md()))
        by_rpc = dict(requests())
        for rpc in ("CountAudience", "ExportAudience", "UpsertCustomers"):
            run(f"no key: {rpc}", UNAUTHENTICATED, call(rpc, by_rpc[rpc], ()))
        # Decided before whether the tenant exists, so that keys cannot probe.
        count = lambda tenant: pb.CountAudienceRequest(tenant=tenant, rule_text="opted_in")  # noqa: E731
        run("other's key: tenant that does not exist", DENIED,
            self.call("CountAudience", count("ghost"), self.other()))
        run("victim's key: tenant that does not exist", DENIED,
            self.call("CountAudience", count("ghost")))
        for name, tenant in [("invalid tenant name", "../victim"), ("empty tenant", "")]:
            run(f"victim's key: {name}", DENIED | INVALID,
                self.call("CountAudience", count(tenant)))
        victim_key = self.keys["victim"]
        key_id = victim_key.split("_")[1]
        secret = victim_key.split("_", 2)[2]
        basic = base64.b64encode(b"victim:" + victim_key.encode()).decode()
        for name, header in [
            ("malformed key", "Bearer not-a-key"),
            ("empty Bearer", "Bearer "),
            ("key without a scheme", victim_key),
            ("key as Basic credentials", "Basic " + basic),
            ("right key id, wrong secret", f"Bearer sgd_{key_id}_" + secrets.token_urlsafe(32)),
            ("right key id, empty secret", f"Bearer sgd_{key_id}_"),
            ("right secret, unknown key id", f"Bearer sgd_0000000000000000_{secret}"),
            ("key id of 10k hex digits", "Bearer sgd_" + "a" * 10_000 + "_x"),
            ("4 KiB of junk", "Bearer " + "A" * 4_096),
        ]:
            md = (("authorization", header),)
            run(name, UNAUTHENTICATED, self.call("CountAudience", count("victim"), md))
        # A key of victim's works; revoked, it no longer does.
        revoked = self.auth(self.keys["revoked"])
        run("second key before revoking", OK, self.call("CountAudience", count("victim"), revoked))
        other_key_id = self.keys["other"].split("_")[1]
        request = pb.RevokeApiKeyRequest(key_id=other_key_id)
        run("victim's key revokes other's key", DENIED,
            self.admin_call("RevokeApiKey", request, self.victim()))
        self.admin_call("RevokeApiKey", pb.RevokeApiKeyRequest(key_id=self.revoked_key_id))()
        run("revoked key", UNAUTHENTICATED, self.call("CountAudience", count("victim"), revoked))
        run("revoked key writing", UNAUTHENTICATED,
            self.call("UpsertCustomers", by_rpc["UpsertCustomers"], revoked))
        # Tenant keys on the admin service, and the admin's own bad input.
        for rpc, request in [
            ("CreateTenant", pb.CreateTenantRequest(tenant="h-in")),
            ("CreateApiKey", pb.CreateApiKeyRequest(tenant="victim", label="stolen")),
            ("ListApiKeys", pb.ListApiKeysRequest()),
            ("RevokeApiKey", pb.RevokeApiKeyRequest(key_id=key_id)),
        ]:
            run(f"victim's key: admin {rpc}", DENIED, self.admin_call(rpc, request, self.victim()))
        request = pb.CreateTenantRequest(tenant="h-in")
        run("no key: admin CreateTenant", UNAUTHENTICATED,
            self.admin_call("CreateTenant", request, ()))
        list_keys = pb.ListApiKeysRequest()
        run("revoked key: admin ListApiKeys", UNAUTHENTICATED,
            self.admin_call("ListApiKeys", list_keys, revoked))
        wrong_admin = self.auth(self.server.admin_key + "x")
        run("wrong admin key", UNAUTHENTICATED,
            self.admin_call("ListApiKeys", list_keys, wrong_admin))
        for name, expected, rpc, request in [
            ("CreateTenant victim again", {"ALREADY_EXISTS"}, "CreateTenant",
             pb.CreateTenantRequest(tenant="victim")),
            ("CreateTenant empty name", INVALID, "CreateTenant", pb.CreateTenantRequest()),
            ("CreateTenant 65-byte name", INVALID, "CreateTenant",
             pb.CreateTenantRequest(tenant="t" * 65)),
            ("CreateTenant name with a slash", INVALID, "CreateTenant",
             pb.CreateTenantRequest(tenant="a/b")),
            ("CreateTenant name with NUL", INVALID, "CreateTenant",
             pb.CreateTenantRequest(tenant="a\x00b")),
            ("CreateTenant name with a space", INVALID, "CreateTenant",
             pb.CreateTenantRequest(tenant="a b")),
            ("CreateTenant unknown time zone", INVALID, "CreateTenant",
             pb.CreateTenantRequest(tenant="h-tz", time_zone="Mars/Base")),
            ("CreateApiKey unknown tenant", {"NOT_FOUND"}, "CreateApiKey",
             pb.CreateApiKeyRequest(tenant="ghost")),
            ("CreateApiKey label 201 chars", INVALID, "CreateApiKey",
             pb.CreateApiKeyRequest(tenant="victim", label="l" * 201)),
            ("RevokeApiKey unknown key id", {"NOT_FOUND"}, "RevokeApiKey",
             pb.RevokeApiKeyRequest(key_id="0000000000000000")),
            ("RevokeApiKey empty key id", INVALID, "RevokeApiKey", pb.RevokeApiKeyRequest()),
        ]:
            run(f"admin: {name}", expected, self.admin_call(rpc, request))
        # other's key still works: the refused revocation changed nothing.
        run("other's key still works on other", OK,
            self.call("CountAudience", count("other"), self.other()))

    # -- after the hostile phase

    def reflection_lists(self, version):
        """The services that reflection `version` lists, asked without a key.

        v1 and v1alpha share their messages, so grpcio-reflection's v1alpha
        classes serve for both."""
        pb = self.reflection_pb2
        call = self.channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb.ServerReflectionResponse.FromString,
        )
        asked = iter([pb.ServerReflectionRequest(list_services="")])
        answers = list(call(asked, timeout=CALL_TIMEOUT))
        return {s.name for answer in answers for s in answer.list_services_response.service}

    def check_reflection(self):
        wanted = {"segmentd.v1.SegmentService", "segmentd.v1.AdminService", "grpc.health.v1.Health"}
        for version in ("v1alpha", "v1"):
            try:
                listed = self.reflection_lists(version)
            except self.grpc.RpcError as error:
                self.fail(f"reflection {version}: {code_name(error.code())} {error.details()}")
                continue
            if wanted <= listed:
                print(f"reflection {version}, no key: {', '.join(sorted(listed))}")
            else:
                missing = sorted(wanted - listed)
                self.fail(f"reflection {version} lists {sorted(listed)}, without {missing}")

    def check_health(self):
        for service in ("", "segmentd.v1.SegmentService"):
            request = self.health_pb2.HealthCheckRequest(service=service)
            try:
                status = self.health.Check(request, timeout=CALL_TIMEOUT).status
            except self.grpc.RpcError as error:
                self.fail(f"health of {service!r}: {code_name(error.code())} {error.details()}")
                continue
            if status != self.health_pb2.HealthCheckResponse.SERVING:
                self.fail(f"health of {service!r} is {status}, not SERVING")

    def check_unchanged(self, before):
        after = self.record()
        names = [name for name, _ in before], [name for name, _ in after]
        if names[0] != names[1]:
            self.fail(f"the reads changed shape: {names[0]} → {names[1]}")
        for (name, old), (_, new) in zip(before, after, strict=False):
            if old != new:
                self.fail(f"`{name}` changed:\n  before {summary(old)}\n  after  {summary(new)}")
        pb, other = self.pb, self.other()
        tenant = self.now("GetTenant", pb.GetTenantRequest(tenant="other"), other)
        request = pb.CountAudienceRequest(tenant="other", rule_text=EVERYONE)
        everyone = self.now("CountAudience", request, other)
        if tenant.customer_count or everyone.count:
            self.fail(f"`other` has {tenant.customer_count} customers, and counts {everyone.count}")
        request = pb.ListSegmentsRequest(tenant="other", show_archived=True)
        segments = self.now("ListSegments", request, other).segments
        if segments:
            self.fail(f"`other` has segments: {[s.segment_id for s in segments]}")
        keys = self.admin_call("ListApiKeys", pb.ListApiKeysRequest())().api_keys
        if {key.tenant for key in keys} != {"victim", "other"} or len(keys) != 3:
            self.fail(f"the keys are not the three made here: {[summary(key) for key in keys]}")

    def check_metrics(self):
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode()
        except OSError as error:
            self.fail(f"metrics at {url}: {error}")
            return
        codes = {}
        for line in text.splitlines():
            match = re.match(r'segmentd_grpc_calls_total\{.*code="([A-Z_]+)".*\} (\d+)', line)
            if match:
                codes[match.group(1)] = codes.get(match.group(1), 0) + int(match.group(2))
        print(f"metrics, calls by code: {dict(sorted(codes.items()))}")

    def check_log(self):
        panics = [line for line in self.server.log_text().splitlines() if "panicked" in line]
        if panics:
            self.fail("the server log has panics:\n  " + "\n  ".join(panics[:10]))

    def stop(self):
        self.server.process.send_signal(signal.SIGTERM)
        try:
            code = self.server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("segmentd did not exit within 30 s of SIGTERM")
            return
        if code != 0:
            self.fail(f"segmentd exited {code} after SIGTERM:\n{self.server.log_tail()}")
        else:
            print("SIGTERM: segmentd exited 0")

    def main(self):
        started = time.monotonic()
        try:
            self.wait_serving()
            self.check_reflection()
            self.set_up_tenants()
            self.seed()
            before = self.record()
            self.check_against_model(before)
            print(f"victim: {len(self.model.order)} customers, {len(EVENTS)} events, 2 segments;"
                  f" {len(before)} answers recorded", flush=True)

            phases = (self.rule_texts, self.structured_rules, self.broken_bytes, self.writes,
                      self.segments_and_more, self.pages, self.watches, self.sizes,
                      self.keys_and_tenants)
            for phase in phases:
                phase_started = time.monotonic()
                phase()
                print(f"{phase.__name__}: {time.monotonic() - phase_started:.1f} s", flush=True)
                if not self.server.alive():
                    self.fail(f"segmentd died in {phase.__name__}:\n{self.server.log_tail()}")
                    break
            print(f"python protobuf, given a 5,000-deep Rule, {self.python_protobuf_deep}")

            if self.server.alive():
                self.check_health()
                self.check_unchanged(before)
                self.check_reflection()
                self.check_metrics()
                self.check_log()
                self.stop()
        finally:
            self.channel.close()
            self.server.kill()
            self.server.log.close()
            if os.environ.get("HOSTILE_KEEP"):
                print(f"kept {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

        self.results.print_table()
        mismatches = self.results.mismatches()
        if mismatches:
            print("\nMismatches:")
            for case, expected, got, message, _ in mismatches:
                print(f"  {case}: expected {expected}, got {got}: {clean(message)[:300]}")
        for failure in self.failures:
            print(f"FAILED: {failure}")
        passed = len(self.results.rows) - len(mismatches)
        failed = len(mismatches) + len(self.failures)
        print(f"\nhostile: {passed} passed, {failed} failed")
        print(f"({time.monotonic() - started:.1f} s)")
        return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the segmentd binary")
    parser.add_argument("--stubs", required=True, help="stubs generated from segmentd.proto")
    args = parser.parse_args()
    args.bin = os.path.abspath(args.bin)
    sys.path.insert(0, args.stubs)

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2
    from segmentd.v1 import segmentd_pb2, segmentd_pb2_grpc

    # SIGTERM (from `timeout`) unwinds through the cleanup that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stubs = (segmentd_pb2, segmentd_pb2_grpc, health_pb2, health_pb2_grpc, reflection_pb2)
    return Hostile(args, stubs).main()


if __name__ == "__main__":
    sys.exit(main())
