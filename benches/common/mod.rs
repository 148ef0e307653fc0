//! The tenant the benchmarks measure: `segmentd generate`'s synthetic
//! merchant, either opened from a data directory it wrote
//! (`SEGMENTD_BENCH_DATA`, tenant `bench`) or generated into a temporary one
//! (`SEGMENTD_BENCH_CUSTOMERS`, default 200,000) through the engine's write
//! path, as `segmentd generate --data` does.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use segmentd::engine::Engine;
use segmentd::generate::{Config, DEFAULT_END, Generator};

pub const TENANT: &str = "bench";
/// The evaluation instant: the last second of the generated history.
pub const AS_OF: i64 = DEFAULT_END - 1;

/// Rules from one clause to ten: AND, OR and NOT, windows and amounts.
pub const RULES: [(&str, &str); 5] = [
    ("1_clause", "opted_in"),
    (
        "3_clauses",
        "opted_in AND state IN (\"CA\", \"TX\", \"NY\") AND NOT tag = \"tag-000\"",
    ),
    (
        "5_clauses_window_amount",
        "opted_in AND state IN (\"CA\", \"TX\", \"FL\", \"NY\") AND ordered WITHIN 30d \
         AND lifetime_spend BETWEEN 50 AND 500 AND NOT tag = \"tag-000\"",
    ),
    (
        "answer_and_lists",
        "answered(\"fit-quiz\", \"size\", \"M\") AND klaviyo_list IN (\"list-00\", \"list-03\")",
    ),
    (
        "10_clauses",
        "(state = \"CA\" OR tag = \"tag-002\") AND NOT ordered WITHIN 30d \
         AND spent BETWEEN 50 AND 500 AND opted_in AND created SINCE 2025-06-01 \
         AND order_count >= 2 AND NOT tag = \"tag-000\" AND lifetime_spend < 5000 \
         AND ordered BEFORE 2025-12-01 AND clicked WITHIN 90d",
    ),
];

/// The engine over the benchmark tenant, and the temporary directory that
/// holds it when it was generated here.
pub fn open() -> (Engine, Option<tempfile::TempDir>) {
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    if let Ok(dir) = std::env::var("SEGMENTD_BENCH_DATA") {
        let started = Instant::now();
        let engine = Engine::open(&PathBuf::from(&dir)).unwrap();
        let customers = engine.tenant_info(TENANT).unwrap().customer_count;
        println!(
            "tenant: {customers} customers from {dir}, opened in {:.1} s; machine: {machine}",
            started.elapsed().as_secs_f64()
        );
        return (engine, None);
    }
    let customers = std::env::var("SEGMENTD_BENCH_CUSTOMERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let started = Instant::now();
    build(&engine, customers);
    println!(
        "tenant: {customers} customers generated in {:.0} s; machine: {machine}",
        started.elapsed().as_secs_f64()
    );
    (engine, Some(dir))
}

/// Writes the generated tenant through the engine in batches of 10,000.
pub fn build(engine: &Engine, customers: u64) {
    let generator = Generator::new(Config {
        customers,
        ..Config::scaled(1.0, 1)
    });
    let ids: Vec<u64> = (0..customers).collect();
    for chunk in ids.chunks(10_000) {
        let batch = chunk
            .iter()
            .map(|&i| generator.customer(i).update())
            .collect();
        engine.upsert_customers(TENANT, batch, AS_OF).unwrap();
    }
    let events: Vec<_> = generator.events().collect();
    for chunk in events.chunks(10_000) {
        engine.record_events(TENANT, chunk.to_vec(), AS_OF).unwrap();
    }
    engine.checkpoint_all(AS_OF).unwrap();
    engine.flush().unwrap();
}
