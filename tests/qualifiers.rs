//! One test per qualifier family of RULES.md, through the real gRPC API.
//!
//! Each test loads a tiny dataset, then asks for every rule twice: once as
//! `rule_text` and once as a structured `Rule` built by hand from the proto
//! types. Both forms must give the same canonical text, and both the count
//! and the resolved member ids must equal a hand count written next to the
//! rule.

mod common;

use common::{TestServer, ts};
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    self, AnsweredCondition, Comparison, CountAudienceRequest, CreateSegmentRequest, Customer,
    CustomerList, DeleteCustomersRequest, Event, EventCondition, EventKind, GetTenantRequest,
    NumberCondition, NumberField, Predicate, PresenceCondition, PresenceField, RecordEventsRequest,
    ResolveSegmentRequest, Rule, Segment, SetCondition, SetField, UpdateTenantRequest,
    UpsertCustomersRequest, count_audience_request, event, predicate::Qualifier,
    resolve_segment_request, rule::Node, window,
};
use tonic::transport::Channel;

use EventKind::{AbandonedCart, Clicked, Messaged, Ordered};
use window::Unit::{Days, Hours, Weeks};

// ------------------------------------------------------------------ harness

/// One tenant of a running server.
struct Shop {
    _server: TestServer,
    _dir: tempfile::TempDir,
    client: SegmentServiceClient<Channel>,
    tenant: String,
}

impl Shop {
    async fn open(tenant: &str) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let client = server.client().await;
        Shop {
            _server: server,
            _dir: dir,
            client,
            tenant: tenant.into(),
        }
    }

    async fn upsert(&mut self, customers: Vec<Customer>) {
        let request = UpsertCustomersRequest {
            tenant: self.tenant.clone(),
            customers,
        };
        self.client.upsert_customers(request).await.unwrap();
    }

    async fn record(&mut self, events: Vec<Event>) {
        let request = RecordEventsRequest {
            tenant: self.tenant.clone(),
            events,
        };
        self.client.record_events(request).await.unwrap();
    }

    async fn delete(&mut self, ids: &[&str]) {
        let request = DeleteCustomersRequest {
            tenant: self.tenant.clone(),
            customer_ids: ids.iter().map(|id| id.to_string()).collect(),
        };
        self.client.delete_customers(request).await.unwrap();
    }

    /// Sets the tenant's time zone and returns it as the server spells it.
    async fn set_zone(&mut self, zone: &str) -> String {
        let request = UpdateTenantRequest {
            tenant: self.tenant.clone(),
            time_zone: zone.into(),
        };
        let response = self.client.update_tenant(request).await.unwrap();
        response.into_inner().time_zone
    }

    /// Counts and resolves `text` and `rule` at `as_of`, and checks that both
    /// forms have the same canonical text and exactly the `expected` members.
    async fn check(&mut self, text: &str, rule: Rule, as_of: Option<&str>, expected: &[&str]) {
        let as_of = as_of.map(ts);
        let mut want: Vec<String> = expected.iter().map(|id| id.to_string()).collect();
        want.sort();
        let audiences = [
            (
                count_audience_request::Audience::RuleText(text.into()),
                resolve_segment_request::Audience::RuleText(text.into()),
            ),
            (
                count_audience_request::Audience::Rule(rule.clone()),
                resolve_segment_request::Audience::Rule(rule),
            ),
        ];
        let mut canonical = Vec::new();
        for (form, (count_audience, resolve_audience)) in ["text", "rule"].iter().zip(audiences) {
            let request = CountAudienceRequest {
                tenant: self.tenant.clone(),
                audience: Some(count_audience),
                as_of,
                ..Default::default()
            };
            let counted = self
                .client
                .count_audience(request)
                .await
                .unwrap_or_else(|s| panic!("`{text}` ({form} form): {s}"))
                .into_inner();
            assert_eq!(
                counted.count,
                want.len() as u64,
                "count of `{text}` ({form} form), want {want:?}"
            );
            canonical.push(counted.rule_text);

            let request = ResolveSegmentRequest {
                tenant: self.tenant.clone(),
                audience: Some(resolve_audience),
                as_of,
                page_size: 1000,
                page_token: String::new(),
            };
            let page = self
                .client
                .resolve_segment(request)
                .await
                .unwrap_or_else(|s| panic!("`{text}` ({form} form): {s}"))
                .into_inner();
            assert_eq!(
                page.total_count,
                want.len() as u64,
                "total of `{text}` ({form} form)"
            );
            let mut got = page.customer_ids;
            got.sort();
            assert_eq!(got, want, "members of `{text}` ({form} form)");
        }
        assert_eq!(
            canonical[0], canonical[1],
            "the text and structured forms of `{text}` differ"
        );
    }
}

// ---------------------------------------------------------------- test data

fn customer(id: &str) -> Customer {
    Customer {
        customer_id: id.into(),
        ..Customer::default()
    }
}

fn event(id: &str, customer: &str, time: &str, kind: event::Kind) -> Event {
    Event {
        event_id: id.into(),
        customer_id: customer.into(),
        time: Some(ts(time)),
        kind: Some(kind),
    }
}

fn order(id: &str, customer: &str, time: &str, cents: i64) -> Event {
    let kind = event::Kind::Order(event::Order { value_cents: cents });
    event(id, customer, time, kind)
}

fn message(id: &str, customer: &str, time: &str) -> Event {
    event(id, customer, time, event::Kind::Message(event::Message {}))
}

fn click(id: &str, customer: &str, time: &str, broadcast: &str) -> Event {
    let kind = event::Kind::Click(event::Click {
        broadcast_id: broadcast.into(),
    });
    event(id, customer, time, kind)
}

fn cart(id: &str, customer: &str, time: &str, cents: i64) -> Event {
    let kind = event::Kind::AbandonedCart(event::AbandonedCart { value_cents: cents });
    event(id, customer, time, kind)
}

fn answer(id: &str, customer: &str, time: &str, exp: &str, question: &str, text: &str) -> Event {
    let kind = event::Kind::Answer(event::Answer {
        experience_id: exp.into(),
        question_id: question.into(),
        answer: text.into(),
    });
    event(id, customer, time, kind)
}

fn consent(id: &str, customer: &str, time: &str, opt_in: bool) -> Event {
    let kind = if opt_in {
        event::Kind::OptIn(event::OptIn {})
    } else {
        event::Kind::OptOut(event::OptOut {})
    };
    event(id, customer, time, kind)
}

// ----------------------------------------------------- structured rule form

fn leaf(qualifier: Qualifier) -> Rule {
    Rule {
        node: Some(Node::Predicate(Predicate {
            qualifier: Some(qualifier),
        })),
    }
}

fn not(rule: Rule) -> Rule {
    Rule {
        node: Some(Node::Not(Box::new(rule))),
    }
}

fn and(rules: Vec<Rule>) -> Rule {
    Rule {
        node: Some(Node::And(proto::RuleList { rules })),
    }
}

fn happened(kind: EventKind, broadcast: Option<&str>, window: Option<proto::Window>) -> Rule {
    leaf(Qualifier::Event(EventCondition {
        kind: kind as i32,
        broadcast_id: broadcast.map(str::to_owned),
        window,
    }))
}

fn within(amount: u32, unit: window::Unit) -> proto::Window {
    proto::Window {
        window: Some(window::Window::Within(window::Duration {
            amount,
            unit: unit as i32,
        })),
    }
}

fn between(start: &str, end: &str) -> proto::Window {
    proto::Window {
        window: Some(window::Window::Between(window::DateRange {
            start_date: start.into(),
            end_date: end.into(),
        })),
    }
}

fn since(date: &str) -> proto::Window {
    proto::Window {
        window: Some(window::Window::Since(date.into())),
    }
}

fn before(date: &str) -> proto::Window {
    proto::Window {
        window: Some(window::Window::Before(date.into())),
    }
}

fn number(field: NumberField, comparison: Comparison, value: i64, upper: i64) -> Rule {
    leaf(Qualifier::Number(NumberCondition {
        field: field as i32,
        comparison: comparison as i32,
        value,
        upper,
    }))
}

fn set(field: SetField, values: &[&str]) -> Rule {
    leaf(Qualifier::Set(SetCondition {
        field: field as i32,
        values: values.iter().map(|v| v.to_string()).collect(),
    }))
}

fn presence(field: PresenceField, is_set: bool) -> Rule {
    leaf(Qualifier::Presence(PresenceCondition {
        field: field as i32,
        is_set,
    }))
}

fn answered(exp: &str, question: &str, text: Option<&str>) -> Rule {
    leaf(Qualifier::Answered(AnsweredCondition {
        experience_id: exp.into(),
        question_id: question.into(),
        answer: text.map(str::to_owned),
    }))
}

fn opted_in() -> Rule {
    leaf(Qualifier::OptedIn(proto::OptedIn {}))
}

fn customers(ids: &[&str]) -> Rule {
    leaf(Qualifier::Customers(CustomerList {
        customer_ids: ids.iter().map(|id| id.to_string()).collect(),
    }))
}

fn segment(id: &str) -> Rule {
    leaf(Qualifier::SegmentId(id.into()))
}

fn created(window: proto::Window) -> Rule {
    leaf(Qualifier::Created(window))
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn opted_in_follows_the_latest_consent_and_a_tie_goes_to_the_later_write() {
    let mut shop = Shop::open("shop").await;

    // o1, o2: only the store's attribute.
    let mut o1 = customer("o1");
    o1.opted_in = Some(true);
    let mut o2 = customer("o2");
    o2.opted_in = Some(false);
    shop.upsert(vec![o1, o2, customer("o9")]).await;
    // o3: in on 03-01, out on 03-05: out.
    shop.record(vec![
        consent("o3-in", "o3", "2026-03-01T10:00:00Z", true),
        consent("o3-out", "o3", "2026-03-05T10:00:00Z", false),
    ])
    .await;
    // o4: the out of 03-05 arrives first, the older in of 03-01 after it:
    // the greatest event time wins, so out.
    shop.record(vec![consent("o4-out", "o4", "2026-03-05T10:00:00Z", false)])
        .await;
    shop.record(vec![consent("o4-in", "o4", "2026-03-01T10:00:00Z", true)])
        .await;
    // o5: out, then an in at the very same time in a later call: in.
    shop.record(vec![consent("o5-out", "o5", "2026-03-05T10:00:00Z", false)])
        .await;
    shop.record(vec![consent("o5-in", "o5", "2026-03-05T10:00:00Z", true)])
        .await;
    // o6: in, then out at the same time, in one batch: events apply in
    // order, so the out is the later write: out.
    shop.record(vec![
        consent("o6-in", "o6", "2026-03-05T10:00:00Z", true),
        consent("o6-out", "o6", "2026-03-05T10:00:00Z", false),
    ])
    .await;
    // o7: the store says opted in now (the upsert is a consent change at the
    // time it arrives, late 2026), then an opt-out dated 03-05 arrives: the
    // upsert is the latest, so in.
    let mut o7 = customer("o7");
    o7.opted_in = Some(true);
    shop.upsert(vec![o7]).await;
    shop.record(vec![consent("o7-out", "o7", "2026-03-05T10:00:00Z", false)])
        .await;
    // o8: out on 03-05, then the store says opted in now: in.
    shop.record(vec![consent("o8-out", "o8", "2026-03-05T10:00:00Z", false)])
        .await;
    let mut o8 = customer("o8");
    o8.opted_in = Some(true);
    shop.upsert(vec![o8]).await;
    // o9: never any consent: out.

    let opted = ["o1", "o5", "o7", "o8"];
    let not_opted = ["o2", "o3", "o4", "o6", "o9"];
    shop.check("opted_in", opted_in(), None, &opted).await;
    shop.check("NOT opted_in", not(opted_in()), None, &not_opted)
        .await;
}

#[tokio::test]
async fn event_qualifiers_honour_every_window_kind_at_as_of() {
    let mut shop = Shop::open("shop").await;
    // The same five times for each event kind, about an evaluation instant
    // of 2026-03-10T12:00:00Z in a UTC tenant:
    //   1: 03-10 11:00      one hour before the instant
    //   2: 03-09 00:00      the first second of yesterday
    //   3: 03-04 00:00      the first second of WITHIN 7d
    //   4: 03-03 23:59:59   the last second before WITHIN 7d
    //   5: 03-10 12:00:01   one second after the instant
    let times = [
        "2026-03-10T11:00:00Z",
        "2026-03-09T00:00:00Z",
        "2026-03-04T00:00:00Z",
        "2026-03-03T23:59:59Z",
        "2026-03-10T12:00:01Z",
    ];
    let kinds: [(&str, EventKind, &str); 4] = [
        ("ordered", Ordered, "o"),
        ("messaged", Messaged, "m"),
        ("clicked", Clicked, "k"),
        ("abandoned_cart", AbandonedCart, "a"),
    ];
    let mut events = Vec::new();
    for (_, kind, prefix) in kinds {
        for (i, time) in times.iter().enumerate() {
            let customer = format!("{prefix}{}", i + 1);
            let id = format!("{customer}-e");
            events.push(match kind {
                Ordered => order(&id, &customer, time, 1000),
                Messaged => message(&id, &customer, time),
                Clicked => click(&id, &customer, time, "B"),
                _ => cart(&id, &customer, time, 1000),
            });
        }
    }
    shop.record(events).await;
    shop.upsert(vec![customer("nobody")]).await;

    let as_of = Some("2026-03-10T12:00:00Z");
    #[rustfmt::skip]
    let windows: Vec<(&str, Option<proto::Window>, &[usize])> = vec![
        ("", None, &[1, 2, 3, 4, 5]),
        // Today so far: 03-10 00:00 up to 12:00.
        (" WITHIN 1d", Some(within(1, Days)), &[1]),
        (" WITHIN 2d", Some(within(2, Days)), &[1, 2]),
        (" WITHIN 7d", Some(within(7, Days)), &[1, 2, 3]),
        (" WITHIN 1w", Some(within(1, Weeks)), &[1, 2, 3]),
        // (03-10 00:00, 12:00]
        (" WITHIN 12h", Some(within(12, Hours)), &[1]),
        // (03-09 00:00, 03-10 12:00]: the open end leaves out 2.
        (" WITHIN 36h", Some(within(36, Hours)), &[1]),
        (" WITHIN 37h", Some(within(37, Hours)), &[1, 2]),
        (" BETWEEN 2026-03-04 AND 2026-03-09", Some(between("2026-03-04", "2026-03-09")), &[2, 3]),
        // Fixed days: 5 is after the instant but on 03-10.
        (" BETWEEN 2026-03-10 AND 2026-03-10", Some(between("2026-03-10", "2026-03-10")), &[1, 5]),
        // Up to the instant: 5 is left out.
        (" SINCE 2026-03-04", Some(since("2026-03-04")), &[1, 2, 3]),
        (" SINCE 2026-03-10", Some(since("2026-03-10")), &[1]),
        (" BEFORE 2026-03-04", Some(before("2026-03-04")), &[4]),
        // Not cut at the instant.
        (" BEFORE 2026-03-11", Some(before("2026-03-11")), &[1, 2, 3, 4, 5]),
    ];
    for (name, kind, prefix) in kinds {
        for (suffix, window, numbers) in &windows {
            let text = format!("{name}{suffix}");
            let expected: Vec<String> = numbers.iter().map(|n| format!("{prefix}{n}")).collect();
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            let rule = happened(kind, None, window.clone());
            shop.check(&text, rule, as_of, &expected).await;
        }
    }
}

#[tokio::test]
async fn clicked_broadcast_counts_only_that_broadcast_inside_the_window() {
    let mut shop = Shop::open("shop").await;
    shop.record(vec![
        // b1 clicked B long ago and C recently.
        click("b1-old", "b1", "2026-01-05T10:00:00Z", "B"),
        click("b1-new", "b1", "2026-03-10T09:00:00Z", "C"),
        // b2 clicked B two days and two hours before the instant.
        click("b2-new", "b2", "2026-03-08T10:00:00Z", "B"),
        // b3 clicked C only; b4 clicked "b", another broadcast id.
        click("b3-new", "b3", "2026-03-09T10:00:00Z", "C"),
        click("b4-new", "b4", "2026-03-09T10:00:00Z", "b"),
    ])
    .await;
    let as_of = Some("2026-03-10T12:00:00Z");
    let b = Some("B");

    let all = ["b1", "b2", "b3", "b4"];
    shop.check("clicked", happened(Clicked, None, None), as_of, &all)
        .await;
    let rule = happened(Clicked, None, Some(within(7, Days)));
    shop.check("clicked WITHIN 7d", rule, as_of, &all).await;
    let rule = happened(Clicked, b, None);
    shop.check("clicked broadcast \"B\"", rule, as_of, &["b1", "b2"])
        .await;
    // b1's click on B is two months old; its recent click is on C.
    let rule = happened(Clicked, b, Some(within(7, Days)));
    shop.check("clicked broadcast \"B\" WITHIN 7d", rule, as_of, &["b2"])
        .await;
    // (03-08 10:00, 03-10 12:00] leaves out b2's click at exactly 03-08 10:00.
    let rule = happened(Clicked, b, Some(within(50, Hours)));
    shop.check("clicked broadcast \"B\" WITHIN 50h", rule, as_of, &[])
        .await;
    let rule = happened(Clicked, b, Some(within(51, Hours)));
    shop.check("clicked broadcast \"B\" WITHIN 51h", rule, as_of, &["b2"])
        .await;
    let rule = happened(Clicked, b, Some(before("2026-02-01")));
    shop.check(
        "clicked broadcast \"B\" BEFORE 2026-02-01",
        rule,
        as_of,
        &["b1"],
    )
    .await;
    let rule = happened(Clicked, Some("C"), Some(since("2026-03-10")));
    shop.check(
        "clicked broadcast \"C\" SINCE 2026-03-10",
        rule,
        as_of,
        &["b1"],
    )
    .await;
    let rule = happened(Clicked, b, Some(between("2026-03-08", "2026-03-09")));
    shop.check(
        "clicked broadcast \"B\" BETWEEN 2026-03-08 AND 2026-03-09",
        rule,
        as_of,
        &["b2"],
    )
    .await;
    let rule = not(happened(Clicked, b, None));
    shop.check("NOT clicked broadcast \"B\"", rule, as_of, &["b3", "b4"])
        .await;
}

/// s0 has no orders; s1 spent 99.99 in one order; s2 exactly 100.00 in two
/// (60.00 + 40.00); s3 100.01 in one.
async fn spending_shop() -> Shop {
    let mut shop = Shop::open("shop").await;
    shop.upsert(vec![customer("s0")]).await;
    shop.record(vec![
        order("s1-a", "s1", "2026-03-01T10:00:00Z", 9_999),
        order("s2-a", "s2", "2026-03-01T10:00:00Z", 6_000),
        order("s2-b", "s2", "2026-03-02T10:00:00Z", 4_000),
        order("s3-a", "s3", "2026-03-01T10:00:00Z", 10_001),
    ])
    .await;
    shop
}

#[tokio::test]
async fn spent_compares_exact_cents_at_the_threshold() {
    use Comparison::{Between, Eq, Ge, Gt, Le, Lt, Ne};
    let mut shop = spending_shop().await;
    // Sums: s0 0.00, s1 99.99, s2 100.00, s3 100.01.
    #[rustfmt::skip]
    let cases: [(&str, Comparison, i64, i64, &[&str]); 9] = [
        ("spent = 100", Eq, 10_000, 0, &["s2"]),
        // No one lacks a value: 0 for s0.
        ("spent != 100.00", Ne, 10_000, 0, &["s0", "s1", "s3"]),
        ("spent < 100", Lt, 10_000, 0, &["s0", "s1"]),
        ("spent <= 100", Le, 10_000, 0, &["s0", "s1", "s2"]),
        ("spent > 100", Gt, 10_000, 0, &["s3"]),
        ("spent >= 100", Ge, 10_000, 0, &["s2", "s3"]),
        ("spent BETWEEN 99.99 AND 100", Between, 9_999, 10_000, &["s1", "s2"]),
        ("spent = 0", Eq, 0, 0, &["s0"]),
        ("spent > 99.99", Gt, 9_999, 0, &["s2", "s3"]),
    ];
    for (text, comparison, value, upper, expected) in cases {
        let rule = number(NumberField::Spent, comparison, value, upper);
        shop.check(text, rule, None, expected).await;
    }
}

#[tokio::test]
async fn order_count_counts_every_order_and_zero_for_none() {
    use Comparison::{Between, Eq, Ge, Gt, Le, Lt, Ne};
    let mut shop = spending_shop().await;
    // Counts: s0 0, s1 1, s2 2, s3 1.
    #[rustfmt::skip]
    let cases: [(&str, Comparison, i64, i64, &[&str]); 8] = [
        ("order_count = 1", Eq, 1, 0, &["s1", "s3"]),
        ("order_count != 1", Ne, 1, 0, &["s0", "s2"]),
        ("order_count < 1", Lt, 1, 0, &["s0"]),
        ("order_count <= 1", Le, 1, 0, &["s0", "s1", "s3"]),
        ("order_count > 1", Gt, 1, 0, &["s2"]),
        ("order_count >= 2", Ge, 2, 0, &["s2"]),
        ("order_count BETWEEN 1 AND 2", Between, 1, 2, &["s1", "s2", "s3"]),
        ("order_count = 0", Eq, 0, 0, &["s0"]),
    ];
    for (text, comparison, value, upper, expected) in cases {
        let rule = number(NumberField::OrderCount, comparison, value, upper);
        shop.check(text, rule, None, expected).await;
    }
}

#[tokio::test]
async fn lifetime_spend_compares_the_synced_value_and_not_equal_keeps_customers_without_one() {
    use Comparison::{Between, Eq, Ge, Gt, Le, Lt, Ne};
    let mut shop = Shop::open("shop").await;
    let with = |id: &str, cents: i64| Customer {
        lifetime_spend_cents: Some(cents),
        ..customer(id)
    };
    // l1 is synced at 200.00 and then at 50.00: the last sync holds.
    shop.upsert(vec![customer("l0"), with("l1", 20_000)]).await;
    shop.upsert(vec![
        with("l1", 5_000),
        with("l2", 10_000),
        with("l3", 10_001),
        with("l4", 0),
    ])
    .await;
    // l0 none, l1 50.00, l2 100.00, l3 100.01, l4 0.00.
    #[rustfmt::skip]
    let cases: [(&str, Comparison, i64, i64, &[&str]); 8] = [
        ("lifetime_spend = 100", Eq, 10_000, 0, &["l2"]),
        ("lifetime_spend != 100", Ne, 10_000, 0, &["l0", "l1", "l3", "l4"]),
        ("lifetime_spend < 100", Lt, 10_000, 0, &["l1", "l4"]),
        ("lifetime_spend <= 100", Le, 10_000, 0, &["l1", "l2", "l4"]),
        ("lifetime_spend > 100", Gt, 10_000, 0, &["l3"]),
        ("lifetime_spend >= 100", Ge, 10_000, 0, &["l2", "l3"]),
        ("lifetime_spend BETWEEN 50 AND 100", Between, 5_000, 10_000, &["l1", "l2"]),
        ("lifetime_spend = 0", Eq, 0, 0, &["l4"]),
    ];
    for (text, comparison, value, upper, expected) in cases {
        let rule = number(NumberField::LifetimeSpend, comparison, value, upper);
        shop.check(text, rule, None, expected).await;
    }
    let rule = not(number(NumberField::LifetimeSpend, Eq, 10_000, 0));
    shop.check(
        "NOT lifetime_spend = 100",
        rule,
        None,
        &["l0", "l1", "l3", "l4"],
    )
    .await;
    let rule = and(vec![
        number(NumberField::LifetimeSpend, Ne, 10_000, 0),
        presence(PresenceField::LifetimeSpend, true),
    ]);
    shop.check(
        "lifetime_spend != 100 AND lifetime_spend IS SET",
        rule,
        None,
        &["l1", "l3", "l4"],
    )
    .await;
}

#[tokio::test]
async fn abandoned_cart_value_is_the_latest_cart_by_event_time_not_the_largest() {
    use Comparison::{Between, Eq, Ge, Gt, Le, Lt, Ne};
    let mut shop = Shop::open("shop").await;
    shop.upsert(vec![customer("a0")]).await;
    // a1: a 20.00 cart on 03-05 arrives first, an older 500.00 cart of 03-01
    // after it: the latest by event time is 20.00.
    shop.record(vec![cart("a1-new", "a1", "2026-03-05T10:00:00Z", 2_000)])
        .await;
    shop.record(vec![cart("a1-old", "a1", "2026-03-01T10:00:00Z", 50_000)])
        .await;
    // a2: one cart of 100.00.
    shop.record(vec![cart("a2", "a2", "2026-03-02T10:00:00Z", 10_000)])
        .await;
    // a3: 10.00 and then 150.00 at the same time, in two calls: the later
    // write wins, 150.00.
    shop.record(vec![cart("a3-a", "a3", "2026-03-02T10:00:00Z", 1_000)])
        .await;
    shop.record(vec![cart("a3-b", "a3", "2026-03-02T10:00:00Z", 15_000)])
        .await;
    // a0 none, a1 20.00, a2 100.00, a3 150.00.
    #[rustfmt::skip]
    let cases: [(&str, Comparison, i64, i64, &[&str]); 7] = [
        ("abandoned_cart_value = 100", Eq, 10_000, 0, &["a2"]),
        ("abandoned_cart_value != 100", Ne, 10_000, 0, &["a0", "a1", "a3"]),
        ("abandoned_cart_value < 100", Lt, 10_000, 0, &["a1"]),
        ("abandoned_cart_value <= 100", Le, 10_000, 0, &["a1", "a2"]),
        ("abandoned_cart_value > 100", Gt, 10_000, 0, &["a3"]),
        ("abandoned_cart_value >= 100", Ge, 10_000, 0, &["a2", "a3"]),
        ("abandoned_cart_value BETWEEN 20 AND 100", Between, 2_000, 10_000, &["a1", "a2"]),
    ];
    for (text, comparison, value, upper, expected) in cases {
        let rule = number(NumberField::AbandonedCartValue, comparison, value, upper);
        shop.check(text, rule, None, expected).await;
    }
    let rule = presence(PresenceField::AbandonedCartValue, true);
    shop.check(
        "abandoned_cart_value IS SET",
        rule,
        None,
        &["a1", "a2", "a3"],
    )
    .await;
    let rule = presence(PresenceField::AbandonedCartValue, false);
    shop.check("abandoned_cart_value IS NOT SET", rule, None, &["a0"])
        .await;
}

#[tokio::test]
async fn created_prefers_the_store_attribute_then_the_earliest_event_then_the_first_upsert() {
    let mut shop = Shop::open("shop").await;
    // c1: store creation 2025-06-01, later an order: created 2025-06-01.
    let c1 = Customer {
        create_time: Some(ts("2025-06-01T00:00:00Z")),
        ..customer("c1")
    };
    shop.upsert(vec![c1, customer("c2"), customer("c3")]).await;
    shop.record(vec![order("c1-o", "c1", "2026-03-05T10:00:00Z", 100)])
        .await;
    // c2: upserted now (late 2026), then orders of 02-10 and 01-15: the
    // earliest event, 2026-01-15, beats the upsert.
    shop.record(vec![
        order("c2-b", "c2", "2026-02-10T10:00:00Z", 100),
        order("c2-a", "c2", "2026-01-15T08:00:00Z", 100),
    ])
    .await;
    // c3: upsert only, so created at the wall-clock time of the upsert.
    // c4: one message of 03-05 12:00.
    shop.record(vec![message("c4-m", "c4", "2026-03-05T12:00:00Z")])
        .await;
    // c5: an order of 01-10, then the store says created 02-20: the store
    // attribute wins even though it is later.
    shop.record(vec![order("c5-o", "c5", "2026-01-10T10:00:00Z", 100)])
        .await;
    let c5 = Customer {
        create_time: Some(ts("2026-02-20T12:00:00Z")),
        ..customer("c5")
    };
    shop.upsert(vec![c5]).await;

    let rule = created(before("2026-01-01"));
    shop.check("created BEFORE 2026-01-01", rule, None, &["c1"])
        .await;
    let rule = created(between("2026-01-15", "2026-01-15"));
    shop.check(
        "created BETWEEN 2026-01-15 AND 2026-01-15",
        rule,
        None,
        &["c2"],
    )
    .await;
    // c5's order of 01-10 is not its creation.
    let rule = created(between("2026-01-01", "2026-01-31"));
    shop.check(
        "created BETWEEN 2026-01-01 AND 2026-01-31",
        rule,
        None,
        &["c2"],
    )
    .await;
    let rule = created(between("2026-02-20", "2026-03-05"));
    shop.check(
        "created BETWEEN 2026-02-20 AND 2026-03-05",
        rule,
        None,
        &["c4", "c5"],
    )
    .await;
    // Only c3 was created after mid 2026 (by its upsert, at the real now).
    let rule = created(since("2026-06-01"));
    shop.check("created SINCE 2026-06-01", rule, None, &["c3"])
        .await;
    // 02-28 00:00 up to 03-06 00:00: c4 (03-05 12:00) only.
    let rule = created(within(7, Days));
    shop.check(
        "created WITHIN 7d",
        rule,
        Some("2026-03-06T00:00:00Z"),
        &["c4"],
    )
    .await;
}

#[tokio::test]
async fn answered_reads_the_latest_answer_by_event_time() {
    let mut shop = Shop::open("shop").await;
    shop.record(vec![
        // p1: M on 03-01, then L on 03-02: L.
        answer("p1-a", "p1", "2026-03-01T10:00:00Z", "fit", "size", "M"),
        answer("p1-b", "p1", "2026-03-02T10:00:00Z", "fit", "size", "L"),
        // p2: L on 03-02 arrives first: L.
        answer("p2-b", "p2", "2026-03-02T10:00:00Z", "fit", "size", "L"),
        // p3: M.
        answer("p3-a", "p3", "2026-03-01T10:00:00Z", "fit", "size", "M"),
        // p4: another question; p5: the same question of another experience.
        answer("p4-a", "p4", "2026-03-01T10:00:00Z", "fit", "color", "L"),
        answer("p5-a", "p5", "2026-03-01T10:00:00Z", "style", "size", "L"),
    ])
    .await;
    // p2: an older M of 03-01 arriving later does not replace L.
    shop.record(vec![answer(
        "p2-a",
        "p2",
        "2026-03-01T10:00:00Z",
        "fit",
        "size",
        "M",
    )])
    .await;
    // p6: M then L at the same time, in two calls: the later write, L.
    shop.record(vec![answer(
        "p6-a",
        "p6",
        "2026-03-03T10:00:00Z",
        "fit",
        "size",
        "M",
    )])
    .await;
    shop.record(vec![answer(
        "p6-b",
        "p6",
        "2026-03-03T10:00:00Z",
        "fit",
        "size",
        "L",
    )])
    .await;

    let rule = answered("fit", "size", Some("L"));
    shop.check(
        r#"answered("fit", "size", "L")"#,
        rule,
        None,
        &["p1", "p2", "p6"],
    )
    .await;
    let rule = answered("fit", "size", Some("M"));
    shop.check(r#"answered("fit", "size", "M")"#, rule, None, &["p3"])
        .await;
    let rule = answered("fit", "size", None);
    shop.check(
        r#"answered("fit", "size")"#,
        rule,
        None,
        &["p1", "p2", "p3", "p6"],
    )
    .await;
    let rule = not(answered("fit", "size", None));
    shop.check(r#"NOT answered("fit", "size")"#, rule, None, &["p4", "p5"])
        .await;
    let rule = answered("style", "size", Some("L"));
    shop.check(r#"answered("style", "size", "L")"#, rule, None, &["p5"])
        .await;
}

#[tokio::test]
async fn tag_matches_case_insensitively_after_trimming() {
    let mut shop = Shop::open("shop").await;
    let tagged = |id: &str, tags: &[&str]| Customer {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..customer(id)
    };
    shop.upsert(vec![
        tagged("t1", &["VIP "]),
        tagged("t2", &["vip"]),
        tagged("t3", &["Wholesale"]),
        customer("t4"),
        tagged("t5", &["vip"]),
        tagged("t6", &["vip"]),
        tagged("t7", &["vip"]),
    ])
    .await;
    // t5's tags are replaced, t6's cleared; t7 is upserted without tags,
    // which leaves them as they were.
    let cleared = Customer {
        replace_tags: true,
        ..customer("t6")
    };
    shop.upsert(vec![tagged("t5", &["  Gift"]), cleared, customer("t7")])
        .await;

    let vip = ["t1", "t2", "t7"];
    let rule = set(SetField::Tag, &["vip"]);
    shop.check("tag = \"vip\"", rule, None, &vip).await;
    let rule = set(SetField::Tag, &[" VIP"]);
    shop.check("tag = \" VIP\"", rule, None, &vip).await;
    let rule = set(SetField::Tag, &["wholesale", "GIFT"]);
    shop.check(
        "tag IN (\"wholesale\", \"GIFT\")",
        rule,
        None,
        &["t3", "t5"],
    )
    .await;
    let rule = not(set(SetField::Tag, &["vip"]));
    shop.check("NOT tag = \"vip\"", rule, None, &["t3", "t4", "t5", "t6"])
        .await;
    let rule = presence(PresenceField::Tag, true);
    shop.check("tag IS SET", rule, None, &["t1", "t2", "t3", "t5", "t7"])
        .await;
    let rule = presence(PresenceField::Tag, false);
    shop.check("tag IS NOT SET", rule, None, &["t4", "t6"])
        .await;
}

#[tokio::test]
async fn state_matches_by_code_or_name_in_any_case() {
    let mut shop = Shop::open("shop").await;
    let located = |id: &str, state: &str| Customer {
        state: Some(state.into()),
        ..customer(id)
    };
    shop.upsert(vec![
        located("s1", "CA"),
        located("s2", "california"),
        located("s3", "New York"),
        customer("s4"),
        located("s5", "ny"),
        located("s6", "TX"),
        located("s7", "CA"),
    ])
    .await;
    // s6's state is cleared; s7 is upserted without one, which keeps CA.
    shop.upsert(vec![located("s6", ""), customer("s7")]).await;

    let california = ["s1", "s2", "s7"];
    let rule = set(SetField::State, &["California"]);
    shop.check("state = \"California\"", rule, None, &california)
        .await;
    let rule = set(SetField::State, &["ca"]);
    shop.check("state = \"ca\"", rule, None, &california).await;
    let rule = set(SetField::State, &["NY", "texas"]);
    shop.check("state IN (\"NY\", \"texas\")", rule, None, &["s3", "s5"])
        .await;
    let rule = not(set(SetField::State, &["CA"]));
    shop.check("NOT state = \"CA\"", rule, None, &["s3", "s4", "s5", "s6"])
        .await;
    let rule = presence(PresenceField::State, true);
    shop.check("state IS SET", rule, None, &["s1", "s2", "s3", "s5", "s7"])
        .await;
    let rule = presence(PresenceField::State, false);
    shop.check("state IS NOT SET", rule, None, &["s4", "s6"])
        .await;
}

#[tokio::test]
async fn timezone_matches_iana_names_in_any_case() {
    let mut shop = Shop::open("shop").await;
    let zoned = |id: &str, zone: &str| Customer {
        time_zone: Some(zone.into()),
        ..customer(id)
    };
    shop.upsert(vec![
        zoned("z1", "America/Chicago"),
        zoned("z2", "america/chicago"),
        zoned("z3", "Asia/Kolkata"),
        customer("z4"),
        zoned("z5", "AMERICA/NEW_YORK"),
    ])
    .await;
    shop.upsert(vec![zoned("z5", "")]).await;

    let rule = set(SetField::Timezone, &["AMERICA/CHICAGO"]);
    shop.check("timezone = \"AMERICA/CHICAGO\"", rule, None, &["z1", "z2"])
        .await;
    // z5 was in New York until its zone was cleared.
    let rule = set(SetField::Timezone, &["asia/kolkata", "America/New_York"]);
    shop.check(
        "timezone IN (\"asia/kolkata\", \"America/New_York\")",
        rule,
        None,
        &["z3"],
    )
    .await;
    let rule = presence(PresenceField::Timezone, true);
    shop.check("timezone IS SET", rule, None, &["z1", "z2", "z3"])
        .await;
    let rule = presence(PresenceField::Timezone, false);
    shop.check("timezone IS NOT SET", rule, None, &["z4", "z5"])
        .await;
}

#[tokio::test]
async fn klaviyo_list_compares_list_ids_exactly() {
    let mut shop = Shop::open("shop").await;
    let listed = |id: &str, lists: &[&str]| Customer {
        klaviyo_lists: lists.iter().map(|l| l.to_string()).collect(),
        ..customer(id)
    };
    shop.upsert(vec![
        listed("k1", &["Xy12ab"]),
        listed("k2", &["xy12ab"]),
        listed("k3", &["Xy12ab", "Q9"]),
        customer("k4"),
        listed("k5", &["Q9"]),
    ])
    .await;
    // k5's lists are replaced.
    shop.upsert(vec![listed("k5", &["R1"])]).await;

    let rule = set(SetField::KlaviyoList, &["Xy12ab"]);
    shop.check("klaviyo_list = \"Xy12ab\"", rule, None, &["k1", "k3"])
        .await;
    let rule = set(SetField::KlaviyoList, &["Q9"]);
    shop.check("klaviyo_list = \"Q9\"", rule, None, &["k3"])
        .await;
    let rule = set(SetField::KlaviyoList, &["xy12ab", "Q9"]);
    shop.check(
        "klaviyo_list IN (\"xy12ab\", \"Q9\")",
        rule,
        None,
        &["k2", "k3"],
    )
    .await;
    let rule = presence(PresenceField::KlaviyoList, true);
    shop.check("klaviyo_list IS SET", rule, None, &["k1", "k2", "k3", "k5"])
        .await;
    let rule = presence(PresenceField::KlaviyoList, false);
    shop.check("klaviyo_list IS NOT SET", rule, None, &["k4"])
        .await;
}

#[tokio::test]
async fn customer_in_lists_live_customers_by_exact_id() {
    let mut shop = Shop::open("shop").await;
    let all = ["c1", "c2", "c3", "c4"].map(customer).to_vec();
    shop.upsert(all).await;

    let rule = customers(&["c1", "c3", "ghost"]);
    shop.check(
        "customer IN (\"c1\", \"c3\", \"ghost\")",
        rule,
        None,
        &["c1", "c3"],
    )
    .await;
    let rule = customers(&["C1"]);
    shop.check("customer IN (\"C1\")", rule, None, &[]).await;
    let rule = not(customers(&["c1"]));
    shop.check("NOT customer IN (\"c1\")", rule, None, &["c2", "c3", "c4"])
        .await;
    shop.delete(&["c3"]).await;
    let rule = customers(&["c1", "c3"]);
    shop.check("customer IN (\"c1\", \"c3\")", rule, None, &["c1"])
        .await;
}

#[tokio::test]
async fn segment_membership_applies_the_include_and_exclude_lists() {
    let mut shop = Shop::open("shop").await;
    let vip = |id: &str| Customer {
        tags: vec!["vip".into()],
        ..customer(id)
    };
    shop.upsert(vec![vip("c1"), vip("c2"), customer("c3"), customer("c4")])
        .await;
    let request = CreateSegmentRequest {
        tenant: shop.tenant.clone(),
        segment_id: "vip-plus".into(),
        segment: Some(Segment {
            title: "VIPs, plus c3, minus c1".into(),
            rule_text: "tag = \"vip\"".into(),
            included_customer_ids: vec!["c3".into()],
            excluded_customer_ids: vec!["c1".into()],
            ..Segment::default()
        }),
    };
    shop.client.create_segment(request).await.unwrap();

    // (rule {c1, c2} ∪ included {c3}) − excluded {c1}.
    let rule = segment("vip-plus");
    shop.check("segment = \"vip-plus\"", rule, None, &["c2", "c3"])
        .await;
    let rule = not(segment("vip-plus"));
    shop.check("NOT segment = \"vip-plus\"", rule, None, &["c1", "c4"])
        .await;
    // An included customer that is deleted is no longer a member.
    shop.delete(&["c3"]).await;
    let rule = segment("vip-plus");
    shop.check("segment = \"vip-plus\"", rule, None, &["c2"])
        .await;
}

#[tokio::test]
async fn is_set_and_is_not_set_split_live_customers_for_every_known_field() {
    let mut shop = Shop::open("shop").await;
    // f1 has every field; f2 none; f3 had the clearable ones and lost them;
    // f4 has only a zero lifetime spend and a zero-value cart.
    let full = |id: &str| Customer {
        state: Some("CA".into()),
        time_zone: Some("America/Chicago".into()),
        tags: vec!["vip".into()],
        klaviyo_lists: vec!["L1".into()],
        ..customer(id)
    };
    let f1 = Customer {
        lifetime_spend_cents: Some(1_000),
        ..full("f1")
    };
    let f4 = Customer {
        lifetime_spend_cents: Some(0),
        ..customer("f4")
    };
    shop.upsert(vec![f1, customer("f2"), full("f3"), f4]).await;
    let cleared = Customer {
        state: Some(String::new()),
        time_zone: Some(String::new()),
        replace_tags: true,
        replace_klaviyo_lists: true,
        ..customer("f3")
    };
    shop.upsert(vec![cleared]).await;
    shop.record(vec![
        cart("f1-cart", "f1", "2026-03-01T10:00:00Z", 5_000),
        cart("f4-cart", "f4", "2026-03-01T10:00:00Z", 0),
    ])
    .await;

    let fields = [
        ("state", PresenceField::State, &["f1"][..]),
        ("timezone", PresenceField::Timezone, &["f1"]),
        ("tag", PresenceField::Tag, &["f1"]),
        ("klaviyo_list", PresenceField::KlaviyoList, &["f1"]),
        (
            "lifetime_spend",
            PresenceField::LifetimeSpend,
            &["f1", "f4"],
        ),
        (
            "abandoned_cart_value",
            PresenceField::AbandonedCartValue,
            &["f1", "f4"],
        ),
    ];
    let everyone = ["f1", "f2", "f3", "f4"];
    for (name, field, with) in fields {
        let without: Vec<&str> = everyone.into_iter().filter(|c| !with.contains(c)).collect();
        let text = format!("{name} IS SET");
        shop.check(&text, presence(field, true), None, with).await;
        let text = format!("{name} IS NOT SET");
        shop.check(&text, presence(field, false), None, &without)
            .await;
    }
}

#[tokio::test]
async fn not_is_relative_to_live_customers_after_a_delete() {
    let mut shop = Shop::open("shop").await;
    shop.upsert(vec![customer("c1")]).await;
    shop.record(vec![
        order("c2-o", "c2", "2026-03-01T10:00:00Z", 1_000),
        order("c3-o", "c3", "2026-03-01T10:00:00Z", 1_000),
        message("c4-m", "c4", "2026-03-01T10:00:00Z"),
    ])
    .await;
    shop.delete(&["c3", "c4"]).await;

    // Live: c1 and c2. c3 and c4 are in no set, negated or not.
    let rule = happened(Ordered, None, None);
    shop.check("ordered", rule, None, &["c2"]).await;
    let rule = not(happened(Ordered, None, None));
    shop.check("NOT ordered", rule, None, &["c1"]).await;
    let rule = not(happened(Messaged, None, None));
    shop.check("NOT messaged", rule, None, &["c1", "c2"]).await;
    let request = GetTenantRequest {
        tenant: shop.tenant.clone(),
    };
    let tenant = shop.client.get_tenant(request).await.unwrap().into_inner();
    assert_eq!(tenant.customer_count, 2);

    // c3 comes back with a plain upsert: live again, with no orders.
    shop.upsert(vec![customer("c3")]).await;
    let rule = not(happened(Ordered, None, None));
    shop.check("NOT ordered", rule, None, &["c1", "c3"]).await;
    let rule = number(NumberField::OrderCount, Comparison::Eq, 0, 0);
    shop.check("order_count = 0", rule, None, &["c1", "c3"])
        .await;
}

/// Orders about New York's DST days and local midnights, by customer:
///
/// | id | UTC                  | New York              | NY day | UTC day |
/// | -- | -------------------- | --------------------- | ------ | ------- |
/// | n1 | 2026-03-08 04:59:59  | 03-07 23:59:59 EST    | 03-07  | 03-08   |
/// | n2 | 2026-03-08 05:00:00  | 03-08 00:00:00 EST    | 03-08  | 03-08   |
/// | n5 | 2026-03-08 07:30:00  | 03-08 03:30:00 EDT    | 03-08  | 03-08   |
/// | n3 | 2026-03-09 03:59:59  | 03-08 23:59:59 EDT    | 03-08  | 03-09   |
/// | n4 | 2026-03-09 04:00:00  | 03-09 00:00:00 EDT    | 03-09  | 03-09   |
/// | f1 | 2026-11-01 03:59:59  | 10-31 23:59:59 EDT    | 10-31  | 11-01   |
/// | f2 | 2026-11-01 04:00:00  | 11-01 00:00:00 EDT    | 11-01  | 11-01   |
/// | f5 | 2026-11-01 06:30:00  | 11-01 01:30:00 EST    | 11-01  | 11-01   |
/// | f3 | 2026-11-02 04:30:00  | 11-01 23:30:00 EST    | 11-01  | 11-02   |
/// | f4 | 2026-11-02 05:00:00  | 11-02 00:00:00 EST    | 11-02  | 11-02   |
///
/// 2026-03-08 in New York has 23 hours (05:00Z to 04:00Z next day), and
/// 2026-11-01 has 25 (04:00Z to 05:00Z next day).
fn dst_orders() -> Vec<Event> {
    [
        ("n1", "2026-03-08T04:59:59Z"),
        ("n2", "2026-03-08T05:00:00Z"),
        ("n5", "2026-03-08T07:30:00Z"),
        ("n3", "2026-03-09T03:59:59Z"),
        ("n4", "2026-03-09T04:00:00Z"),
        ("f1", "2026-11-01T03:59:59Z"),
        ("f2", "2026-11-01T04:00:00Z"),
        ("f5", "2026-11-01T06:30:00Z"),
        ("f3", "2026-11-02T04:30:00Z"),
        ("f4", "2026-11-02T05:00:00Z"),
    ]
    .iter()
    .map(|(id, time)| order(&format!("{id}-o"), id, time, 1_000))
    .collect()
}

/// Checks the orders of `dst_orders` against a New York calendar.
async fn check_new_york_days(shop: &mut Shop) {
    let ordered_in = |w| happened(Ordered, None, Some(w));
    let spring_night = Some("2026-03-09T03:59:59Z"); // 03-08 23:59:59 EDT
    let fall_night = Some("2026-11-02T04:59:59Z"); // 11-01 23:59:59 EST

    let rule = ordered_in(between("2026-03-08", "2026-03-08"));
    let text = "ordered BETWEEN 2026-03-08 AND 2026-03-08";
    shop.check(text, rule, None, &["n2", "n3", "n5"]).await;
    let rule = ordered_in(between("2026-03-07", "2026-03-07"));
    let text = "ordered BETWEEN 2026-03-07 AND 2026-03-07";
    shop.check(text, rule, None, &["n1"]).await;
    // Today so far, late on 03-08: from 05:00Z; n3 is the instant itself.
    let rule = ordered_in(within(1, Days));
    shop.check("ordered WITHIN 1d", rule, spring_night, &["n2", "n3", "n5"])
        .await;
    // One second later it is 03-09 00:00 EDT: only n4, at that very second.
    let rule = ordered_in(within(1, Days));
    shop.check(
        "ordered WITHIN 1d",
        rule,
        Some("2026-03-09T04:00:00Z"),
        &["n4"],
    )
    .await;
    // From 03-07 00:00 EST (05:00Z).
    let rule = ordered_in(within(2, Days));
    let expected = ["n1", "n2", "n3", "n5"];
    shop.check("ordered WITHIN 2d", rule, spring_night, &expected)
        .await;
    // At 03-08 08:00 EDT (12:00Z): from 03-08 00:00 EST.
    let rule = ordered_in(since("2026-03-08"));
    let text = "ordered SINCE 2026-03-08";
    shop.check(text, rule, Some("2026-03-08T12:00:00Z"), &["n2", "n5"])
        .await;
    let rule = ordered_in(before("2026-03-08"));
    shop.check("ordered BEFORE 2026-03-08", rule, None, &["n1"])
        .await;

    let rule = ordered_in(between("2026-11-01", "2026-11-01"));
    let text = "ordered BETWEEN 2026-11-01 AND 2026-11-01";
    shop.check(text, rule, None, &["f2", "f3", "f5"]).await;
    // The 25-hour day so far holds f2, f5 and f3.
    let rule = ordered_in(within(1, Days));
    shop.check("ordered WITHIN 1d", rule, fall_night, &["f2", "f3", "f5"])
        .await;
    // Rolling hours ignore the calendar: (11-01 04:59:59Z, 11-02 04:59:59Z].
    let rule = ordered_in(within(24, Hours));
    shop.check("ordered WITHIN 24h", rule, fall_night, &["f3", "f5"])
        .await;
}

/// Checks the orders of `dst_orders` against a UTC calendar.
async fn check_utc_days(shop: &mut Shop) {
    let ordered_in = |w| happened(Ordered, None, Some(w));
    let spring_night = Some("2026-03-09T03:59:59Z");
    let fall_night = Some("2026-11-02T04:59:59Z");

    let rule = ordered_in(between("2026-03-08", "2026-03-08"));
    let text = "ordered BETWEEN 2026-03-08 AND 2026-03-08";
    shop.check(text, rule, None, &["n1", "n2", "n5"]).await;
    let rule = ordered_in(between("2026-03-07", "2026-03-07"));
    let text = "ordered BETWEEN 2026-03-07 AND 2026-03-07";
    shop.check(text, rule, None, &[]).await;
    // Today is 03-09 UTC from 00:00Z.
    let rule = ordered_in(within(1, Days));
    shop.check("ordered WITHIN 1d", rule, spring_night, &["n3"])
        .await;
    let rule = ordered_in(within(1, Days));
    let as_of = Some("2026-03-09T04:00:00Z");
    shop.check("ordered WITHIN 1d", rule, as_of, &["n3", "n4"])
        .await;
    // From 03-08 00:00Z.
    let rule = ordered_in(within(2, Days));
    let expected = ["n1", "n2", "n3", "n5"];
    shop.check("ordered WITHIN 2d", rule, spring_night, &expected)
        .await;
    let rule = ordered_in(since("2026-03-08"));
    let text = "ordered SINCE 2026-03-08";
    let as_of = Some("2026-03-08T12:00:00Z");
    shop.check(text, rule, as_of, &["n1", "n2", "n5"]).await;
    let rule = ordered_in(before("2026-03-08"));
    shop.check("ordered BEFORE 2026-03-08", rule, None, &[])
        .await;

    let rule = ordered_in(between("2026-11-01", "2026-11-01"));
    let text = "ordered BETWEEN 2026-11-01 AND 2026-11-01";
    shop.check(text, rule, None, &["f1", "f2", "f5"]).await;
    // Today is 11-02 UTC from 00:00Z; f4 (05:00Z) is after the instant.
    let rule = ordered_in(within(1, Days));
    shop.check("ordered WITHIN 1d", rule, fall_night, &["f3"])
        .await;
    let rule = ordered_in(within(24, Hours));
    shop.check("ordered WITHIN 24h", rule, fall_night, &["f3", "f5"])
        .await;
}

#[tokio::test]
async fn new_york_days_hold_23_and_25_hours_when_the_zone_is_set_before_the_events() {
    let mut shop = Shop::open("ny").await;
    // Creates the tenant; the zone is matched in any case, kept in IANA case.
    assert_eq!(shop.set_zone("america/new_york").await, "America/New_York");
    shop.record(dst_orders()).await;
    check_new_york_days(&mut shop).await;

    assert_eq!(shop.set_zone("UTC").await, "UTC");
    check_utc_days(&mut shop).await;
}

#[tokio::test]
async fn changing_the_zone_after_the_events_rebuckets_their_days() {
    let mut shop = Shop::open("ny").await;
    shop.record(dst_orders()).await;
    check_utc_days(&mut shop).await;

    assert_eq!(shop.set_zone("America/New_York").await, "America/New_York");
    check_new_york_days(&mut shop).await;

    assert_eq!(shop.set_zone("UTC").await, "UTC");
    check_utc_days(&mut shop).await;
}
