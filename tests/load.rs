//! `segmentd load`: the real binary against a real server, reading and
//! writing, with its table checked against what the server holds.

mod common;

use std::process::Output;

use common::TestServer;
use segmentd::proto::{CountAudienceRequest, GetTenantRequest, count_audience_request};
use tonic::Code;

fn load(server: &TestServer, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["load", "--server"])
        .arg(server.addr.to_string())
        .args(args)
        .output()
        .unwrap()
}

/// The cells of the table's one data row.
fn row(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let line = stdout.lines().last().unwrap();
    line.trim_matches('|')
        .split('|')
        .map(|cell| cell.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_load_records_new_events_for_each_client_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let args = [
        "--tenant",
        "w",
        "--record-events",
        "50",
        "--customers",
        "30",
        "--concurrency",
        "2",
        "--tenant-per-client",
        "--seconds",
        "1",
    ];
    let cells = row(&load(&server, &args));
    // | calls | calls/s | events/s | p50 | p99 | p99.9 | max |
    assert_eq!(cells.len(), 7, "{cells:?}");
    let calls: u64 = cells[0].parse().unwrap();
    let calls_per_second: f64 = cells[1].parse().unwrap();
    let events_per_second: f64 = cells[2].parse().unwrap();
    assert!(calls > 0);
    // The events/s come from the server's recorded counts, calls/s from the
    // client's own tally: every call's 50 events were new to the server.
    let ratio = events_per_second / calls_per_second;
    assert!(
        (ratio - 50.0).abs() < 1.0,
        "{events_per_second} / {calls_per_second}"
    );

    // Each client wrote its own tenant, only to customers c0..c29, and only
    // orders, messages and clicks.
    for tenant in ["w-0", "w-1"] {
        let active = server
            .members(tenant, "ordered OR messaged OR clicked")
            .await;
        assert!(!active.is_empty(), "{tenant}");
        for id in &active {
            let n: u32 = id.strip_prefix('c').unwrap().parse().unwrap();
            assert!(n < 30, "{tenant}: {id}");
        }
    }
    let missing = server
        .client()
        .await
        .get_tenant(GetTenantRequest { tenant: "w".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_load_counts_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let write = [
        "--tenant",
        "r",
        "--record-events",
        "100",
        "--customers",
        "10",
        "--seconds",
        "1",
        "--concurrency",
        "1",
    ];
    row(&load(&server, &write));
    let rule = "ordered WITHIN 30d";
    let request = CountAudienceRequest {
        tenant: "r".into(),
        audience: Some(count_audience_request::Audience::RuleText(rule.into())),
        ..Default::default()
    };
    let count = server.client().await.count_audience(request).await.unwrap();
    assert!(count.into_inner().count <= 10);

    let read = [
        "--tenant",
        "r",
        "--rule",
        rule,
        "--seconds",
        "1",
        "--concurrency",
        "2",
    ];
    let cells = row(&load(&server, &read));
    // | calls | calls/s | p50 | p99 | p99.9 | max |
    assert_eq!(cells.len(), 6, "{cells:?}");
    assert!(cells[0].parse::<u64>().unwrap() > 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_load_times_the_change_feed_for_every_probe_customer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let args = [
        "--tenant",
        "w",
        "--record-events",
        "100",
        "--customers",
        "50",
        "--concurrency",
        "2",
        "--watch-delay",
        "--seconds",
        "1",
    ];
    let output = load(&server, &args);
    let cells = row(&output);
    // | probes | p50 | p99 | max |: one probe customer per upsert, each told.
    assert_eq!(cells.len(), 4, "{cells:?}");
    let probes: u64 = cells[0].parse().unwrap();
    let tagged = server.members("w", r#"tag = "load-probe""#).await.len() as u64;
    assert!(probes > 0);
    assert_eq!(probes, tagged);
    let p50: f64 = cells[1].parse().unwrap();
    let max: f64 = cells[3].parse().unwrap();
    assert!(p50 <= max);
    server.stop().await;
}
