//! Cold start: opening a data directory and loading every tenant into
//! memory, the work `serve` does before it turns SERVING.
//!
//!     SEGMENTD_BENCH_CUSTOMERS=1000000 cargo bench --bench restart
//!     SEGMENTD_BENCH_DATA=/path/to/data cargo bench --bench restart

use criterion::{Criterion, criterion_group, criterion_main};
use segmentd::engine::Engine;

mod common;

// The allocator the server runs with, so that figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn restart(c: &mut Criterion) {
    let (engine, dir) = common::open();
    drop(engine);
    let path = match &dir {
        Some(dir) => dir.path().to_owned(),
        None => std::env::var("SEGMENTD_BENCH_DATA").unwrap().into(),
    };
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.bench_function("open_and_load", |b| {
        b.iter(|| drop(Engine::open(&path).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, restart);
criterion_main!(benches);
