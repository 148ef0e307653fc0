//! `segmentd load`: a load generator for a running server. It keeps
//! `--concurrency` calls in flight (`CountAudience`, `ResolveSegment` for a
//! first page of 1,000, or `RecordEvents` batches of new events) for
//! `--seconds`, and prints throughput and latency percentiles as a table.

use std::time::{Duration, Instant};

use crate::cli::LoadArgs;
use crate::proto::{
    CountAudienceRequest, Event, RecordEventsRequest, ResolveSegmentRequest,
    count_audience_request, event, resolve_segment_request,
};

/// Runs the load and prints the table.
pub async fn run(args: LoadArgs) -> Result<(), String> {
    let as_of = args
        .as_of
        .as_deref()
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: 0,
                })
                .map_err(|error| format!("--as-of `{text}`: {error}"))
        })
        .transpose()?;
    let client = crate::import::connect(&args.client)
        .await
        .map_err(|error| error.to_string())?;
    if let Some(batch) = args.record_events {
        return record(&args, client, batch).await;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();

    let mut workers = Vec::new();
    for worker in 0..args.concurrency as usize {
        let mut client = client.clone();
        let rules = args.rules.clone();
        let tenant = args.tenant.clone();
        let resolve = args.resolve;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut turn = worker;
            while Instant::now() < deadline {
                let rule = rules[turn % rules.len()].clone();
                turn += 1;
                let sent = Instant::now();
                let outcome = if resolve {
                    let request = ResolveSegmentRequest {
                        tenant: tenant.clone(),
                        audience: Some(resolve_segment_request::Audience::RuleText(rule)),
                        as_of,
                        page_size: 1_000,
                        page_token: String::new(),
                    };
                    client.resolve_segment(request).await.map(drop)
                } else {
                    let request = CountAudienceRequest {
                        tenant: tenant.clone(),
                        audience: Some(count_audience_request::Audience::RuleText(rule)),
                        as_of,
                        ..CountAudienceRequest::default()
                    };
                    client.count_audience(request).await.map(drop)
                };
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(status) => errors.push(status),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for worker in workers {
        let (mut done, mut failed) = worker.await.map_err(|error| error.to_string())?;
        latencies.append(&mut done);
        errors.append(&mut failed);
    }
    let elapsed = started.elapsed();
    print_table(&args, &mut latencies, elapsed, None);
    first_error(&errors)
}

/// The load's outcome: an error naming the first failure, if any call failed.
fn first_error(errors: &[tonic::Status]) -> Result<(), String> {
    if let Some(status) = errors.first() {
        return Err(format!(
            "{} calls failed; the first: {}: {}",
            errors.len(),
            status.code(),
            status.message()
        ));
    }
    Ok(())
}

/// Writes batches of new events from every client until the time is up.
/// Event ids carry the run's start time, so each run writes new events.
async fn record(
    args: &LoadArgs,
    client: crate::client::SegmentClient,
    batch: u32,
) -> Result<(), String> {
    let run = chrono::Utc::now().timestamp_millis();
    let now = chrono::Utc::now().timestamp();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let probe = if args.watch_delay {
        let tenant = if args.tenant_per_client {
            format!("{}-0", args.tenant)
        } else {
            args.tenant.clone()
        };
        Some(tokio::spawn(probe_feed(
            client.clone(),
            tenant,
            run,
            deadline,
        )))
    } else {
        None
    };
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let mut client = client.clone();
        let tenant = if args.tenant_per_client {
            format!("{}-{worker}", args.tenant)
        } else {
            args.tenant.clone()
        };
        let customers = u64::from(args.customers);
        workers.push(tokio::spawn(async move {
            let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (u64::from(worker) + 1));
            let (mut latencies, mut errors, mut recorded) = (Vec::new(), Vec::new(), 0u64);
            let mut next_id = 0u64;
            while Instant::now() < deadline {
                let events = (0..batch)
                    .map(|_| {
                        next_id += 1;
                        synthetic_event(
                            &mut random,
                            customers,
                            now,
                            format!("load-{run}-{worker}-{next_id}"),
                        )
                    })
                    .collect();
                let request = RecordEventsRequest {
                    tenant: tenant.clone(),
                    events,
                };
                let sent = Instant::now();
                match client.record_events(request).await {
                    Ok(response) => {
                        latencies.push(sent.elapsed());
                        recorded += u64::from(response.into_inner().recorded_count);
                    }
                    Err(status) => errors.push(status),
                }
            }
            (latencies, errors, recorded)
        }));
    }
    let (mut latencies, mut errors, mut recorded) = (Vec::new(), Vec::new(), 0);
    for worker in workers {
        let (mut done, mut failed, count) = worker.await.map_err(|error| error.to_string())?;
        latencies.append(&mut done);
        errors.append(&mut failed);
        recorded += count;
    }
    let elapsed = started.elapsed();
    print_table(args, &mut latencies, elapsed, Some(recorded));
    if let Some(probe) = probe {
        let (mut delays, early) = probe.await.map_err(|error| error.to_string())??;
        print_delays(&mut delays, early);
    }
    first_error(&errors)
}

/// The segment the load keeps moving, and the probe's, saved by `--watch-delay`.
const MOVED_SEGMENT: (&str, &str) = (
    "load-recent-buyers",
    "ordered WITHIN 30d AND NOT messaged WITHIN 7d",
);
const PROBE_SEGMENT: &str = "load-probe";
const PROBE_TAG: &str = "load-probe";

/// Until `deadline`, upserts a new tagged customer every 50 ms and times
/// the change feed: from each upsert's acknowledgement to the message that
/// tells the customer entered the probe segment. Returns the delays, and
/// how many messages came before their write's acknowledgement did.
async fn probe_feed(
    mut client: crate::client::SegmentClient,
    tenant: String,
    run: i64,
    deadline: Instant,
) -> Result<(Vec<Duration>, usize), String> {
    use crate::proto::{CreateSegmentRequest, Customer, Segment, UpsertCustomersRequest};
    let refused = |status: tonic::Status| format!("{}: {}", status.code(), status.message());
    let probe_customer = |n: u64, tags: Vec<String>| UpsertCustomersRequest {
        tenant: tenant.clone(),
        customers: vec![Customer {
            customer_id: format!("probe-{run}-{n}"),
            tags,
            ..Customer::default()
        }],
    };
    // An untagged one first: segments need their tenant to exist.
    client
        .upsert_customers(probe_customer(0, Vec::new()))
        .await
        .map_err(refused)?;
    for (segment_id, rule) in [
        MOVED_SEGMENT,
        (PROBE_SEGMENT, &format!("tag = \"{PROBE_TAG}\"")),
    ] {
        let created = client
            .create_segment(CreateSegmentRequest {
                tenant: tenant.clone(),
                segment_id: segment_id.to_owned(),
                segment: Some(Segment {
                    title: segment_id.to_owned(),
                    rule_text: rule.to_owned(),
                    ..Segment::default()
                }),
            })
            .await;
        match created {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => return Err(refused(status)),
        }
    }
    let mut stream = client
        .watch_segment_changes(crate::proto::WatchSegmentChangesRequest {
            tenant: tenant.clone(),
            segment_ids: vec![PROBE_SEGMENT.to_owned()],
            after_sequence: None,
        })
        .await
        .map_err(refused)?
        .into_inner();

    let seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        std::sync::Arc::default();
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(change)) = stream.message().await {
                let at = Instant::now();
                let mut seen = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for id in change.entered_customer_ids {
                    seen.entry(id).or_insert(at);
                }
            }
        })
    };
    let mut acknowledged = Vec::new();
    let mut probe = 0u64;
    while Instant::now() < deadline {
        probe += 1;
        client
            .upsert_customers(probe_customer(probe, vec![PROBE_TAG.to_owned()]))
            .await
            .map_err(refused)?;
        acknowledged.push((format!("probe-{run}-{probe}"), Instant::now()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the last changes a moment to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut delays = Vec::with_capacity(acknowledged.len());
    let mut early = 0;
    for (customer_id, acked) in acknowledged {
        let Some(&told) = seen.get(&customer_id) else {
            return Err(format!("the feed never told that {customer_id} entered"));
        };
        if told < acked {
            early += 1;
        }
        delays.push(told.saturating_duration_since(acked));
    }
    Ok((delays, early))
}

/// The value at `fraction` of sorted durations, in milliseconds ("-" if none).
fn percentile(sorted: &[Duration], fraction: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    format!("{:.2}", sorted[rank - 1].as_secs_f64() * 1e3)
}

fn print_delays(delays: &mut [Duration], early: usize) {
    delays.sort_unstable();
    let at = |fraction| percentile(delays, fraction);
    println!();
    println!(
        "Change feed: from a write's acknowledgement to its change on a watch \
         ({early} of {} told before the acknowledgement reached the client, counted as 0)",
        delays.len()
    );
    println!("| probes | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {} |",
        delays.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// An order, a message or a click by one of `customers`, some time in the
/// 90 days before `now`. Low customer numbers are drawn more often.
fn synthetic_event(random: &mut Random, customers: u64, now: i64, event_id: String) -> Event {
    // The smaller of two uniform draws: a simple skew towards low numbers.
    let customer = random.below(customers).min(random.below(customers));
    let time = now - random.below(90 * 86_400) as i64;
    let kind = match random.below(10) {
        0..4 => event::Kind::Order(event::Order {
            value_cents: 500 + random.below(20_000) as i64,
        }),
        4..8 => event::Kind::Message(event::Message {}),
        _ => event::Kind::Click(event::Click {
            broadcast_id: format!("b{}", random.below(20)),
        }),
    };
    Event {
        event_id,
        customer_id: format!("c{customer}"),
        time: Some(prost_types::Timestamp {
            seconds: time,
            nanos: 0,
        }),
        kind: Some(kind),
    }
}

/// xorshift64*: enough randomness for synthetic load, and no dependency.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn print_table(
    args: &LoadArgs,
    latencies: &mut [Duration],
    elapsed: Duration,
    recorded: Option<u64>,
) {
    latencies.sort_unstable();
    let at = |fraction| percentile(latencies, fraction);
    let calls = latencies.len();
    let seconds = elapsed.as_secs_f64();
    let what = match (args.record_events, args.resolve) {
        (Some(batch), _) => format!(
            "RecordEvents ({batch} events a call, {})",
            if args.tenant_per_client {
                "a tenant per client"
            } else {
                "one tenant"
            }
        ),
        (None, true) => format!("ResolveSegment (1,000 ids), {} rule(s)", args.rules.len()),
        (None, false) => format!("CountAudience, {} rule(s)", args.rules.len()),
    };
    println!(
        "{what} over gRPC to {}, {} in flight, {seconds:.1} s; client on {} cores",
        args.client.server,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let (events_head, events_rule, events_cell) = match recorded {
        Some(recorded) => (
            " events/s |",
            " --- |",
            format!(" {:.0} |", recorded as f64 / seconds),
        ),
        None => ("", "", String::new()),
    };
    println!("| calls | calls/s |{events_head} p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("| --- | --- |{events_rule} --- | --- | --- | --- |");
    println!(
        "| {calls} | {:.0} |{events_cell} {} | {} | {} | {} |",
        calls as f64 / seconds,
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0),
    );
}
