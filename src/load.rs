//! `segmentd load`: a load generator for a running server. It keeps
//! `--concurrency` calls in flight (`CountAudience`, or `ResolveSegment`
//! for a first page of 1,000) for `--seconds`, going round the rules given,
//! and prints throughput and latency percentiles as a table.

use std::time::{Duration, Instant};

use crate::cli::LoadArgs;
use crate::proto::{
    CountAudienceRequest, ResolveSegmentRequest, count_audience_request, resolve_segment_request,
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
    let client = crate::import::connect(&args.server)
        .await
        .map_err(|error| error.to_string())?;
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
    print_table(&args, &mut latencies, elapsed);
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

fn print_table(args: &LoadArgs, latencies: &mut [Duration], elapsed: Duration) {
    latencies.sort_unstable();
    let at = |fraction: f64| -> String {
        if latencies.is_empty() {
            return "-".to_owned();
        }
        let rank = ((latencies.len() as f64 * fraction).ceil() as usize).clamp(1, latencies.len());
        format!("{:.2}", latencies[rank - 1].as_secs_f64() * 1e3)
    };
    let calls = latencies.len();
    println!(
        "{} over gRPC to {}, {} in flight, {:.1} s, {} rule(s); client on {} cores",
        if args.resolve {
            "ResolveSegment (1,000 ids)"
        } else {
            "CountAudience"
        },
        args.server,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.rules.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("| calls | calls/s | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| {calls} | {:.0} | {} | {} | {} | {} |",
        calls as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0),
    );
}
