//! Property test: random writes and random rules, sent to a real server,
//! checked against a naive model that keeps every customer as a plain
//! record and evaluates rules one customer at a time.
//!
//! The model is written from RULES.md alone: it shares no code with the
//! engine, and it renders rules to text with its own printer.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    CountAudienceRequest, Customer, DeleteCustomersRequest, Event, RecordEventsRequest,
    ResolveSegmentRequest, UpsertCustomersRequest, count_audience_request, event,
    resolve_segment_request,
};
use tonic::transport::Channel;

/// 2026-01-01T00:00:00Z; generated events fall in the `SPAN` days after it.
const BASE: i64 = 1_767_225_600;
const DAY: i64 = 86_400;
/// Days that events span: short, so that windows often cut through data.
const SPAN: i64 = 12;
const STATES: [(&str, &str); 4] = [
    ("CA", "california"),
    ("NY", "New York"),
    ("TX", "tx"),
    ("WA", "Washington"),
];
const TAGS: [&str; 4] = ["vip", "VIP ", "wholesale", "  Gift"];

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        customer: u8,
        state: Option<Option<usize>>,
        tags: Option<Vec<usize>>,
        opted_in: Option<bool>,
        lifetime_spend: Option<i64>,
    },
    Order {
        id: u16,
        customer: u8,
        time: i64,
        cents: i64,
    },
    Message {
        id: u16,
        customer: u8,
        time: i64,
    },
    Consent {
        id: u16,
        customer: u8,
        time: i64,
        opt_in: bool,
    },
    Delete {
        customer: u8,
    },
}

#[derive(Debug, Clone, Copy)]
enum Window {
    WithinDays(u32),
    WithinHours(u32),
    Between(i64, i64),
    Since(i64),
    Before(i64),
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Rule {
    OptedIn,
    Ordered(Option<Window>),
    Messaged(Option<Window>),
    OrderCount(Cmp, u64),
    Spent(Cmp, u64),
    SpentBetween(u64, u64),
    LifetimeSpend(Cmp, u64),
    State(Vec<usize>),
    Tag(usize),
    StateSet(bool),
    TagSet(bool),
    LifetimeSet(bool),
    Created(Window),
    Customers(Vec<u8>),
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
}

/// A customer as the model keeps it.
#[derive(Debug, Clone, Default)]
struct Person {
    state: Option<usize>,
    tags: BTreeSet<String>,
    /// (ordering key, value): upserts order after every event time.
    consent: Option<(i64, bool)>,
    lifetime_spend: Option<u64>,
    orders: Vec<(i64, u64)>,
    messages: Vec<i64>,
    first_event: Option<i64>,
}

#[derive(Default)]
struct Model {
    people: BTreeMap<u8, Person>,
    seen_events: HashSet<u16>,
    upserts: i64,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Upsert {
                customer,
                state,
                tags,
                opted_in,
                lifetime_spend,
            } => {
                self.upserts += 1;
                let upserts = self.upserts;
                let person = self.people.entry(*customer).or_default();
                if let Some(state) = state {
                    person.state = *state;
                }
                if let Some(tags) = tags {
                    person.tags = tags
                        .iter()
                        .map(|&t| TAGS[t].trim().to_lowercase())
                        .collect();
                }
                if let Some(opted_in) = opted_in {
                    person.consent = Some((i64::MAX / 2 + upserts, *opted_in));
                }
                if let Some(cents) = lifetime_spend {
                    person.lifetime_spend = Some(*cents as u64);
                }
            }
            Op::Order {
                id,
                customer,
                time,
                cents,
            } => {
                if self.seen_events.insert(*id) {
                    let person = self.event_person(*customer, *time);
                    person.orders.push((*time, *cents as u64));
                }
            }
            Op::Message { id, customer, time } => {
                if self.seen_events.insert(*id) {
                    self.event_person(*customer, *time).messages.push(*time);
                }
            }
            Op::Consent {
                id,
                customer,
                time,
                opt_in,
            } => {
                if self.seen_events.insert(*id) {
                    let person = self.event_person(*customer, *time);
                    if person.consent.is_none_or(|(t, _)| *time >= t) {
                        person.consent = Some((*time, *opt_in));
                    }
                }
            }
            Op::Delete { customer } => {
                self.people.remove(customer);
            }
        }
    }

    fn event_person(&mut self, customer: u8, time: i64) -> &mut Person {
        let person = self.people.entry(customer).or_default();
        person.first_event = Some(person.first_event.map_or(time, |t| t.min(time)));
        person
    }

    fn members(&self, rule: &Rule, instant: i64, now: i64) -> BTreeSet<u8> {
        self.people
            .iter()
            .filter(|(id, person)| holds(rule, **id, person, instant, now))
            .map(|(id, _)| *id)
            .collect()
    }
}

fn compare(cmp: Cmp, a: u64, b: u64) -> bool {
    match cmp {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}

/// Whether time `t` lies in the window at `instant` (UTC days).
fn in_window(window: Window, t: i64, instant: i64) -> bool {
    let midnight = |t: i64| t.div_euclid(DAY) * DAY;
    match window {
        Window::WithinDays(n) => t >= midnight(instant) - (i64::from(n) - 1) * DAY && t <= instant,
        Window::WithinHours(n) => t > instant - i64::from(n) * 3600 && t <= instant,
        Window::Between(a, b) => t >= BASE + a * DAY && t < BASE + (b + 1) * DAY,
        Window::Since(a) => t >= BASE + a * DAY && t <= instant,
        Window::Before(a) => t < BASE + a * DAY,
    }
}

fn holds(rule: &Rule, id: u8, p: &Person, instant: i64, now: i64) -> bool {
    let spent: u64 = p.orders.iter().map(|(_, c)| c).sum();
    match rule {
        Rule::OptedIn => p.consent.is_some_and(|(_, v)| v),
        Rule::Ordered(w) => p
            .orders
            .iter()
            .any(|(t, _)| w.is_none_or(|w| in_window(w, *t, instant))),
        Rule::Messaged(w) => p
            .messages
            .iter()
            .any(|t| w.is_none_or(|w| in_window(w, *t, instant))),
        Rule::OrderCount(cmp, n) => compare(*cmp, p.orders.len() as u64, *n),
        Rule::Spent(cmp, n) => compare(*cmp, spent, *n),
        Rule::SpentBetween(a, b) => spent >= *a && spent <= *b,
        // `!=` is `NOT =`: a customer with no value is kept.
        Rule::LifetimeSpend(Cmp::Ne, n) => p.lifetime_spend != Some(*n),
        Rule::LifetimeSpend(cmp, n) => p.lifetime_spend.is_some_and(|v| compare(*cmp, v, *n)),
        Rule::State(states) => p.state.is_some_and(|s| states.contains(&s)),
        Rule::Tag(t) => p.tags.contains(&TAGS[*t].trim().to_lowercase()),
        Rule::StateSet(set) => p.state.is_some() == *set,
        Rule::TagSet(set) => p.tags.is_empty() != *set,
        Rule::LifetimeSet(set) => p.lifetime_spend.is_some() == *set,
        Rule::Created(w) => {
            let created = p.first_event.unwrap_or(now);
            in_window(*w, created, instant)
        }
        Rule::Customers(ids) => ids.contains(&id),
        Rule::And(rules) => rules.iter().all(|r| holds(r, id, p, instant, now)),
        Rule::Or(rules) => rules.iter().any(|r| holds(r, id, p, instant, now)),
        Rule::Not(rule) => !holds(rule, id, p, instant, now),
    }
}

/// The model's own printer: every group in parentheses.
fn text(rule: &Rule) -> String {
    fn date(day: i64) -> String {
        chrono::DateTime::from_timestamp(BASE + day * DAY, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    }
    fn window(w: &Window) -> String {
        match w {
            Window::WithinDays(n) => format!("within {n}d"),
            Window::WithinHours(n) => format!("WITHIN {n}H"),
            Window::Between(a, b) => format!("BETWEEN {} AND {}", date(*a), date(*b)),
            Window::Since(a) => format!("since {}", date(*a)),
            Window::Before(a) => format!("BEFORE {}", date(*a)),
        }
    }
    fn cmp(c: &Cmp) -> &'static str {
        match c {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
    fn money(cents: u64) -> String {
        format!("{}.{:02}", cents / 100, cents % 100)
    }
    let optional = |w: &Option<Window>| {
        w.as_ref()
            .map(|w| format!(" {}", window(w)))
            .unwrap_or_default()
    };
    match rule {
        Rule::OptedIn => "opted_in".into(),
        Rule::Ordered(w) => format!("ordered{}", optional(w)),
        Rule::Messaged(w) => format!("Messaged{}", optional(w)),
        Rule::OrderCount(c, n) => format!("order_count {} {n}", cmp(c)),
        Rule::Spent(c, n) => format!("spent {} {}", cmp(c), money(*n)),
        Rule::SpentBetween(a, b) => format!("spent BETWEEN {} and {}", money(*a), money(*b)),
        Rule::LifetimeSpend(c, n) => format!("lifetime_spend {} {}", cmp(c), money(*n)),
        Rule::State(states) => {
            let names: Vec<String> = states
                .iter()
                .map(|&s| format!("\"{}\"", STATES[s].1))
                .collect();
            format!("state IN ({})", names.join(", "))
        }
        Rule::Tag(t) => format!("tag = \"{}\"", TAGS[*t]),
        Rule::StateSet(true) => "state IS SET".into(),
        Rule::StateSet(false) => "state IS NOT SET".into(),
        Rule::TagSet(true) => "tag is set".into(),
        Rule::TagSet(false) => "tag IS NOT SET".into(),
        Rule::LifetimeSet(true) => "lifetime_spend IS SET".into(),
        Rule::LifetimeSet(false) => "lifetime_spend IS NOT SET".into(),
        Rule::Created(w) => format!("created {}", window(w)),
        Rule::Customers(ids) => {
            let ids: Vec<String> = ids.iter().map(|id| format!("\"c{id}\"")).collect();
            format!("customer IN ({})", ids.join(", "))
        }
        Rule::And(rules) => format!(
            "({})",
            rules.iter().map(text).collect::<Vec<_>>().join(" AND ")
        ),
        Rule::Or(rules) => format!(
            "({})",
            rules.iter().map(text).collect::<Vec<_>>().join(" OR ")
        ),
        Rule::Not(rule) => format!("NOT ({})", text(rule)),
    }
}

fn time() -> impl Strategy<Value = i64> {
    // Whole days (midnight exactly) and arbitrary seconds, over 60 days.
    prop_oneof![
        (0i64..60).prop_map(|d| BASE + d * DAY),
        (0i64..60 * DAY).prop_map(|s| BASE + s)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let customer = 0u8..12;
    let id = 0u16..200;
    prop_oneof![
        3 => (
            customer.clone(),
            proptest::option::of(proptest::option::of(0usize..4)),
            proptest::option::of(proptest::collection::vec(0usize..4, 0..3)),
            proptest::option::of(any::<bool>()),
            proptest::option::of(0i64..50_000),
        )
            .prop_map(|(customer, state, tags, opted_in, lifetime_spend)| Op::Upsert {
                customer,
                state,
                tags,
                opted_in,
                lifetime_spend,
            }),
        5 => (id.clone(), customer.clone(), time(), prop_oneof![Just(0i64), Just(10_000), 0i64..30_000])
            .prop_map(|(id, customer, time, cents)| Op::Order { id, customer, time, cents }),
        2 => (id.clone(), customer.clone(), time())
            .prop_map(|(id, customer, time)| Op::Message { id, customer, time }),
        2 => (id, customer.clone(), time(), any::<bool>())
            .prop_map(|(id, customer, time, opt_in)| Op::Consent { id, customer, time, opt_in }),
        1 => customer.prop_map(|customer| Op::Delete { customer }),
    ]
}

fn window() -> impl Strategy<Value = Window> {
    prop_oneof![
        (1u32..10).prop_map(Window::WithinDays),
        (1u32..72).prop_map(Window::WithinHours),
        (0i64..SPAN, 0i64..5).prop_map(|(a, len)| Window::Between(a, a + len)),
        (0i64..SPAN).prop_map(Window::Since),
        (0i64..SPAN + 1).prop_map(Window::Before),
    ]
}

fn cmp() -> impl Strategy<Value = Cmp> {
    prop_oneof![
        Just(Cmp::Eq),
        Just(Cmp::Ne),
        Just(Cmp::Lt),
        Just(Cmp::Le),
        Just(Cmp::Gt),
        Just(Cmp::Ge)
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    let cents = prop_oneof![Just(0u64), Just(10_000), 0u64..60_000];
    let leaf = prop_oneof![
        Just(Rule::OptedIn),
        window().prop_map(|w| Rule::Ordered(Some(w))),
        window().prop_map(|w| Rule::Ordered(Some(w))),
        window().prop_map(|w| Rule::Messaged(Some(w))),
        proptest::option::of(window()).prop_map(Rule::Ordered),
        proptest::option::of(window()).prop_map(Rule::Messaged),
        (cmp(), 0u64..5).prop_map(|(c, n)| Rule::OrderCount(c, n)),
        (cmp(), cents.clone()).prop_map(|(c, n)| Rule::Spent(c, n)),
        (cents.clone(), cents.clone()).prop_map(|(a, b)| Rule::SpentBetween(a.min(b), a.max(b))),
        (cmp(), cents).prop_map(|(c, n)| Rule::LifetimeSpend(c, n)),
        proptest::collection::vec(0usize..4, 1..3).prop_map(Rule::State),
        (0usize..4).prop_map(Rule::Tag),
        any::<bool>().prop_map(Rule::StateSet),
        any::<bool>().prop_map(Rule::TagSet),
        any::<bool>().prop_map(Rule::LifetimeSet),
        window().prop_map(Rule::Created),
        proptest::collection::vec(0u8..14, 1..4).prop_map(Rule::Customers),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Rule::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Rule::Or),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

fn instant() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0i64..SPAN + 2).prop_map(|d| BASE + d * DAY),
        (0i64..SPAN + 2).prop_map(|d| BASE + d * DAY - 1),
        (0i64..(SPAN + 2) * DAY).prop_map(|s| BASE + s),
    ]
}

async fn send(client: &mut SegmentServiceClient<Channel>, tenant: &str, op: &Op) {
    let order_like = |id: u16, customer: u8, time: i64, kind| Event {
        event_id: format!("e{id}"),
        customer_id: format!("c{customer}"),
        time: Some(prost_types::Timestamp {
            seconds: time,
            nanos: 0,
        }),
        kind: Some(kind),
    };
    match op {
        Op::Upsert {
            customer,
            state,
            tags,
            opted_in,
            lifetime_spend,
        } => {
            let customer = Customer {
                customer_id: format!("c{customer}"),
                state: state.map(|s| s.map(|s| STATES[s].1.to_owned()).unwrap_or_default()),
                tags: tags
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .map(|&t| TAGS[t].to_owned())
                    .collect(),
                replace_tags: tags.is_some(),
                opted_in: *opted_in,
                lifetime_spend_cents: *lifetime_spend,
                ..Customer::default()
            };
            let request = UpsertCustomersRequest {
                tenant: tenant.into(),
                customers: vec![customer],
            };
            client.upsert_customers(request).await.unwrap();
        }
        Op::Order {
            id,
            customer,
            time,
            cents,
        } => {
            let kind = event::Kind::Order(event::Order {
                value_cents: *cents,
            });
            let request = RecordEventsRequest {
                tenant: tenant.into(),
                events: vec![order_like(*id, *customer, *time, kind)],
            };
            client.record_events(request).await.unwrap();
        }
        Op::Message { id, customer, time } => {
            let kind = event::Kind::Message(event::Message {});
            let request = RecordEventsRequest {
                tenant: tenant.into(),
                events: vec![order_like(*id, *customer, *time, kind)],
            };
            client.record_events(request).await.unwrap();
        }
        Op::Consent {
            id,
            customer,
            time,
            opt_in,
        } => {
            let kind = if *opt_in {
                event::Kind::OptIn(event::OptIn {})
            } else {
                event::Kind::OptOut(event::OptOut {})
            };
            let request = RecordEventsRequest {
                tenant: tenant.into(),
                events: vec![order_like(*id, *customer, *time, kind)],
            };
            client.record_events(request).await.unwrap();
        }
        Op::Delete { customer } => {
            let request = DeleteCustomersRequest {
                tenant: tenant.into(),
                customer_ids: vec![format!("c{customer}")],
            };
            client.delete_customers(request).await.unwrap();
        }
    }
}

#[test]
fn counts_and_members_match_a_naive_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(TestServer::start(dir.path()));
    let client = runtime.block_on(server.client());
    let case = std::sync::atomic::AtomicU32::new(0);

    let cases = std::env::var("SEGMENTD_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(160);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let scenario = (
        proptest::collection::vec(op(), 1..40),
        proptest::collection::vec((rule(), instant()), 1..12),
    );
    runner
        .run(&scenario, |(ops, rules)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tenant = format!("model-{n}");
            let mut client = client.clone();
            let now = chrono::Utc::now().timestamp();
            let mut model = Model::default();
            // The first write creates the tenant; a delete alone would not.
            let create = Op::Upsert {
                customer: 0,
                state: None,
                tags: None,
                opted_in: None,
                lifetime_spend: None,
            };
            for op in std::iter::once(&create).chain(&ops) {
                runtime.block_on(send(&mut client, &tenant, op));
                model.apply(op);
            }
            for (rule, instant) in &rules {
                let rule_text = text(rule);
                let expected: BTreeSet<String> = model
                    .members(rule, *instant, now)
                    .iter()
                    .map(|id| format!("c{id}"))
                    .collect();
                let as_of = Some(prost_types::Timestamp {
                    seconds: *instant,
                    nanos: 0,
                });
                let count = runtime.block_on(client.count_audience(CountAudienceRequest {
                    tenant: tenant.clone(),
                    audience: Some(count_audience_request::Audience::RuleText(
                        rule_text.clone(),
                    )),
                    as_of,
                }));
                let count = count
                    .map_err(|s| TestCaseError::fail(format!("{rule_text}: {s}")))?
                    .into_inner()
                    .count;
                prop_assert_eq!(
                    count,
                    expected.len() as u64,
                    "count of `{}` at {}",
                    rule_text,
                    instant
                );
                let page = runtime.block_on(client.resolve_segment(ResolveSegmentRequest {
                    tenant: tenant.clone(),
                    audience: Some(resolve_segment_request::Audience::RuleText(
                        rule_text.clone(),
                    )),
                    as_of,
                    page_size: 100,
                    page_token: String::new(),
                }));
                let page = page
                    .map_err(|s| TestCaseError::fail(format!("{rule_text}: {s}")))?
                    .into_inner();
                let got: BTreeSet<String> = page.customer_ids.into_iter().collect();
                prop_assert_eq!(got, expected, "members of `{}` at {}", rule_text, instant);
            }
            Ok(())
        })
        .unwrap();
    runtime.block_on(server.stop());
}
