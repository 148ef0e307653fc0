//! In process: counts of representative rules, a first page of 1,000
//! members, and one durable write batch, over `segmentd generate`'s tenant.
//!
//!     cargo bench --bench count_rules                         # 200,000 customers
//!     SEGMENTD_BENCH_DATA=/path/to/data cargo bench --bench count_rules
//!     SEGMENTD_BENCH_DATA=/path/to/data SEGMENTD_BENCH_WRITE=1 cargo bench --bench count_rules
//!
//! For the second, write the tenant first with
//! `segmentd generate --scale 1 --data /path/to/data` (10M customers).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use segmentd::engine::types::{Audience, EventData, NewEvent};

mod common;

// The allocator the server runs with, so that figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use common::{AS_OF, RULES, TENANT};

fn benches(c: &mut Criterion) {
    let (engine, dir) = common::open();

    let mut group = c.benchmark_group("count");
    for (name, text) in RULES {
        let audience = Audience::Rule(segmentd::rule::parse(text).unwrap());
        println!(
            "{name}: {} members",
            engine.count(TENANT, &audience, AS_OF).unwrap()
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(engine.count(TENANT, &audience, AS_OF).unwrap()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("resolve");
    let audience = Audience::Rule(segmentd::rule::parse(RULES[2].1).unwrap());
    group.bench_function("first_page_of_1000_5_clauses", |b| {
        b.iter(|| black_box(engine.page(TENANT, &audience, AS_OF, None, 1_000).unwrap()))
    });
    let everyone = Audience::Rule(segmentd::rule::parse("opted_in").unwrap());
    group.bench_function("first_page_of_1000_opted_in", |b| {
        b.iter(|| black_box(engine.page(TENANT, &everyone, AS_OF, None, 1_000).unwrap()))
    });
    group.finish();

    // One durable batch of 1,000 new orders for existing customers. The
    // tenant grows by them, so a directory given by SEGMENTD_BENCH_DATA is
    // written to only when SEGMENTD_BENCH_WRITE=1 says so.
    if dir.is_none() && std::env::var("SEGMENTD_BENCH_WRITE").as_deref() != Ok("1") {
        println!(
            "write/record_1000_orders: skipped (set SEGMENTD_BENCH_WRITE=1 to write to the data directory)"
        );
        return;
    }
    let customers = engine.tenant_info(TENANT).unwrap().customer_count;
    let mut next = 0u64;
    let mut group = c.benchmark_group("write");
    group.sample_size(20);
    group.bench_function("record_1000_orders", |b| {
        b.iter_batched(
            || {
                (0..1_000)
                    .map(|i| {
                        next += 1;
                        NewEvent {
                            event_id: format!("bench-{}-{next}", std::process::id()),
                            customer_id: format!("c{}", (next * 7_919 + i) % customers),
                            time: AS_OF - (next % 86_400) as i64,
                            data: EventData::Order { value_cents: 2_500 },
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |events| engine.record_events(TENANT, events, AS_OF).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(count_rules, benches);
criterion_main!(count_rules);
