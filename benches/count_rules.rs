//! Counts of representative rules over a synthetic tenant, in process.
//!
//! The tenant is generated with a fixed seed and loaded through the same
//! engine write path as real data. Size: `SEGMENTD_BENCH_CUSTOMERS`
//! (default 200,000); each customer gets about three orders over two years.
//!
//!     cargo bench --bench count_rules

use std::hint::black_box;

use common::{END, build};
use criterion::{Criterion, criterion_group, criterion_main};
use segmentd::engine::Engine;
use segmentd::engine::types::Audience;

mod common;

fn counts(c: &mut Criterion) {
    let customers = common::customers(200_000);
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
