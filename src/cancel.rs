//! Stopping an evaluation whose caller no longer waits for it.
//!
//! A handler runs the engine on a blocking thread, which the async side
//! cannot interrupt. It gives that thread a [`Cancel`]: the caller's
//! deadline, and a flag set when the call is answered without the work
//! (the deadline passed, or the caller went away and its future was
//! dropped). The rule evaluator calls [`check`] at every node, so work
//! stops within one clause of either, and the call's slot of the
//! concurrency limit comes free with it.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};

/// When the work on this thread is to stop.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    deadline: Option<Instant>,
    abandoned: Arc<AtomicBool>,
}

/// Marks a [`Cancel`] abandoned when dropped: kept by the async side of
/// a call, it drops when the call is answered or the caller goes away.
pub struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

impl Cancel {
    /// A cancel for work due by `deadline`, and the guard that abandons it.
    pub fn new(deadline: Option<Instant>) -> (Cancel, AbandonOnDrop) {
        let abandoned = Arc::new(AtomicBool::new(false));
        let guard = AbandonOnDrop(abandoned.clone());
        (
            Cancel {
                deadline,
                abandoned,
            },
            guard,
        )
    }

    /// Runs `work` with this cancel in force on the current thread.
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        let previous = CURRENT.with(|current| current.replace(Some(self.clone())));
        let outcome = work();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        outcome
    }

    fn check(&self) -> Result<()> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Err(Error::Cancelled(
                "the call was answered or abandoned before its work finished".to_owned(),
            ));
        }
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(Error::DeadlineExceeded(
                "the call's deadline (grpc-timeout) passed".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Whether the work on this thread may go on; outside [`Cancel::run`] it
/// always may.
pub fn check() -> Result<()> {
    CURRENT.with(|current| match &*current.borrow() {
        Some(cancel) => cancel.check(),
        None => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::Engine;
    use crate::engine::types::{Audience, CustomerUpdate};

    fn engine_with_customers(dir: &std::path::Path, count: usize) -> Engine {
        let engine = Engine::open(dir).unwrap();
        let customers = (0..count)
            .map(|i| CustomerUpdate {
                customer_id: format!("c{i}"),
                opted_in: Some(i % 3 != 0),
                ..Default::default()
            })
            .collect();
        engine
            .upsert_customers("t", customers, 1_800_000_000)
            .unwrap();
        engine
    }

    #[test]
    fn an_evaluation_stops_at_its_deadline_or_when_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let customers = 30;
        let engine = engine_with_customers(dir.path(), customers);
        let opted_in = (0..customers).filter(|i| i % 3 != 0).count() as u64;
        let rule = crate::rule::parse("opted_in AND NOT customer IN (\"c1\")").unwrap();
        let audience = Audience::Rule(rule);
        let count = || engine.count("t", &audience, 1_800_000_000);

        // Free to run: the count of the rule (one opted-in customer taken out).
        assert_eq!(count().unwrap(), opted_in - 1);
        let (cancel, _guard) = Cancel::new(Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(cancel.run(count).unwrap(), opted_in - 1);

        let (late, _guard) = Cancel::new(Some(Instant::now() - Duration::from_millis(1)));
        assert!(matches!(late.run(count), Err(Error::DeadlineExceeded(_))));

        let (abandoned, guard) = Cancel::new(None);
        drop(guard);
        assert!(matches!(abandoned.run(count), Err(Error::Cancelled(_))));

        // Out of `run`, the thread is free again.
        assert_eq!(count().unwrap(), opted_in - 1);
    }
}
