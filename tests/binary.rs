//! The `segmentd` binary as an operator runs it: it stops cleanly on
//! SIGTERM and SIGINT, and refuses to serve keyless beyond loopback.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stops_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    // Give start-up a moment to reach the serving loop; a signal that comes
    // earlier must work too, which the short wait does not hide.
    std::thread::sleep(Duration::from_millis(20));

    let killed = Command::new("kill")
        .args([signal, &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?} after {signal}: {log}",
        output.status
    );
    assert!(
        log.contains("storage flushed"),
        "no flush in the log: {log}"
    );
}

#[test]
fn serve_exits_zero_after_flushing_on_sigterm() {
    stops_cleanly_on("-TERM");
}

#[test]
fn serve_exits_zero_after_flushing_on_sigint() {
    stops_cleanly_on("-INT");
}

/// Runs `segmentd serve` expecting it to refuse to start; kills it after
/// 30 seconds if it serves instead. Returns its standard error.
fn refused_start(args: &[&str], data: &std::path::Path) -> String {
    let mut server = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve"])
        .args(args)
        .arg("--data")
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            server.kill().unwrap();
            panic!("serve started where it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = server.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_refuses_a_non_loopback_address_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused_start(&["--listen", "0.0.0.0:0"], dir.path());
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_database_that_is_not_segmentds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let other = sled::open(dir.path()).unwrap();
        other.insert(b"someone else's key", b"value").unwrap();
        other.flush().unwrap();
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let stderr = refused_start(&["--listen", &listen], dir.path());
    assert!(stderr.contains("not a segmentd data directory"), "{stderr}");
}

/// With --drain-seconds, SIGTERM turns health NOT_SERVING while calls are
/// still answered, and the server stops only after the drain; with
/// --log-format json every log line is a JSON object, one per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_health_not_serving_and_logs_json() {
    use segmentd::proto;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let drain = Duration::from_secs(2);
    let server = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--drain-seconds",
            "2",
            "--metrics-listen",
            "off",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "segmentd=debug")
        .arg("--data")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let url = format!("http://127.0.0.1:{port}");
    let channel = loop {
        if let Ok(channel) = tonic::transport::Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let status = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: proto::SERVICE_NAME.to_owned(),
            })
            .await
            .map(|answer| answer.into_inner().status)
            .ok()
    };
    let mut health = status(channel.clone()).await;
    while health != Some(ServingStatus::Serving as i32) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        health = status(channel.clone()).await;
    }
    let mut client = proto::segment_service_client::SegmentServiceClient::new(channel.clone());
    let customers = proto::UpsertCustomersRequest {
        tenant: "drain".to_owned(),
        customers: vec![proto::Customer {
            customer_id: "c".to_owned(),
            opted_in: Some(true),
            ..Default::default()
        }],
    };
    client.upsert_customers(customers).await.unwrap();

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut health = status(channel.clone()).await;
    while health == Some(ServingStatus::Serving as i32) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        health = status(channel.clone()).await;
    }
    assert_eq!(health, Some(ServingStatus::NotServing as i32));
    assert!(
        signalled.elapsed() < drain,
        "health turned only after the drain"
    );
    // Still answering while it drains.
    let request = proto::CountAudienceRequest {
        tenant: "drain".to_owned(),
        audience: Some(proto::count_audience_request::Audience::RuleText(
            "opted_in".to_owned(),
        )),
        ..Default::default()
    };
    assert_eq!(
        client
            .count_audience(request)
            .await
            .unwrap()
            .into_inner()
            .count,
        1
    );

    let output = tokio::task::spawn_blocking(move || server.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        signalled.elapsed() >= drain,
        "stopped before the drain was over"
    );
    assert!(output.status.success(), "{:?}", output.status);
    let log = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let calls: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["message"] == "call")
        .collect();
    let rpcs: Vec<&str> = calls
        .iter()
        .filter_map(|line| line["rpc"].as_str())
        .collect();
    assert_eq!(rpcs, ["UpsertCustomers", "CountAudience"], "{log}");
    for call in calls {
        assert_eq!(call["tenant"], "drain");
        assert_eq!(call["code"], "OK");
        assert!(call["micros"].as_u64().is_some(), "{call}");
        // A call that succeeds is logged at debug.
        assert_eq!(call["level"], "DEBUG");
    }
}
