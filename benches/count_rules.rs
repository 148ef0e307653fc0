//! Counts of representative rules over a synthetic tenant, in process.
//!
//! The tenant is generated with a fixed seed and loaded through the same
//! engine write path as real data. Size: `SEGMENTD_BENCH_CUSTOMERS`
//! (default 200,000); each customer gets about three orders over two years.
//!
//!     cargo bench --bench count_rules

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use segmentd::engine::Engine;
use segmentd::engine::types::{Audience, CustomerUpdate, EventData, NewEvent};

const STATES: [&str; 8] = ["CA", "TX", "FL", "NY", "PA", "IL", "OH", "GA"];
const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z, the end of the generated history.
const END: i64 = 1_767_225_600;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn build(engine: &Engine, customers: u64) {
    let mut rng = Seeded(0x5eed);
    let now = END;
    for start in (0..customers).step_by(10_000) {
        let batch: Vec<CustomerUpdate> = (start..(start + 10_000).min(customers))
            .map(|i| CustomerUpdate {
                customer_id: format!("c{i}"),
                state: Some(Some(
                    STATES[rng.below(STATES.len() as u64) as usize].to_owned(),
                )),
                tags: Some(vec![format!("t{}", rng.below(20) * rng.below(10))]),
                opted_in: Some(rng.below(10) < 6),
                lifetime_spend_cents: Some(rng.below(50_000) * rng.below(20)),
                ..CustomerUpdate::default()
            })
            .collect();
        engine.upsert_customers("bench", batch, now).unwrap();
    }
    let orders = customers * 3;
    let mut event = 0u64;
    while event < orders {
        let batch: Vec<NewEvent> = (0..10_000.min(orders - event))
            .map(|_| {
                event += 1;
                NewEvent {
                    event_id: format!("o{event}"),
                    customer_id: format!("c{}", rng.below(customers)),
                    time: END - rng.below(730) as i64 * DAY - rng.below(DAY as u64) as i64,
                    data: EventData::Order {
                        value_cents: 500 + rng.below(20_000),
                    },
                }
            })
            .collect();
        engine.record_events("bench", batch, now).unwrap();
    }
}

fn counts(c: &mut Criterion) {
    let customers: u64 = std::env::var("SEGMENTD_BENCH_CUSTOMERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    build(&engine, customers);
    println!(
        "tenant: {customers} customers, {} orders; machine: {} cores",
        customers * 3,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let rules = [
        ("one_clause", "opted_in"),
        (
            "three_clauses",
            "opted_in AND state IN (\"CA\", \"NY\", \"TX\") AND NOT tag = \"t0\"",
        ),
        (
            "window_and_amount",
            "opted_in AND state IN (\"CA\", \"NY\", \"TX\") AND NOT tag = \"t0\" \
             AND ordered WITHIN 30d AND lifetime_spend >= 100",
        ),
        (
            "ten_clauses",
            "(state = \"CA\" OR tag = \"t3\") AND NOT ordered WITHIN 30d \
             AND spent BETWEEN 50 AND 500 AND opted_in AND created SINCE 2025-06-01 \
             AND order_count >= 2 AND NOT tag = \"t0\" AND lifetime_spend < 5000 \
             AND ordered BEFORE 2025-12-01",
        ),
    ];
    let mut group = c.benchmark_group("count");
    for (name, text) in rules {
        let audience = Audience::Rule(segmentd::rule::parse(text).unwrap());
        group.bench_function(name, |b| {
            b.iter(|| black_box(engine.count("bench", &audience, END).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, counts);
criterion_main!(benches);
