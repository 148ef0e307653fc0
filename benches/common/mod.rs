//! A synthetic tenant for the benchmarks, generated with a fixed seed and
//! loaded through the engine's own write path.

#![allow(dead_code)]

use segmentd::engine::Engine;
use segmentd::engine::types::{CustomerUpdate, EventData, NewEvent};

const STATES: [&str; 8] = ["CA", "TX", "FL", "NY", "PA", "IL", "OH", "GA"];
const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z, the end of the generated history.
pub const END: i64 = 1_767_225_600;

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

pub fn build(engine: &Engine, customers: u64) {
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

/// The tenant size from `SEGMENTD_BENCH_CUSTOMERS`, or `default`.
pub fn customers(default: u64) -> u64 {
    std::env::var("SEGMENTD_BENCH_CUSTOMERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
