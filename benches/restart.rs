//! Cold start: opening a data directory and loading every tenant into
//! memory, the work `serve` does before it turns SERVING.
//!
//!     SEGMENTD_BENCH_CUSTOMERS=1000000 cargo bench --bench restart

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use segmentd::engine::Engine;

mod common;

fn restart(c: &mut Criterion) {
    let customers = common::customers(200_000);
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let started = Instant::now();
        common::build(&engine, customers);
        println!(
            "tenant: {customers} customers, {} orders, built in {:.0} s; machine: {} cores",
            customers * 3,
            started.elapsed().as_secs_f64(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        engine.flush().unwrap();
    }
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.bench_function("open_and_load", |b| {
        b.iter(|| drop(Engine::open(dir.path()).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, restart);
criterion_main!(benches);
