//! Operating limits through a real server: calls past the concurrency
//! limit are shed, deadlines end calls and streams, metrics count what
//! happened, and TLS serves what plaintext does.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::TestServer;
use segmentd::proto;
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::server::ServeOptions;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Customer ids of 200 bytes, so that an export of a few thousand fills
/// the small flow-control windows of `slow_channel`.
fn long_id(i: usize) -> String {
    format!("{i:0>200}")
}

async fn seed(channel: &Channel, tenant: &str, customers: usize) {
    let mut client = SegmentServiceClient::new(channel.clone());
    let ids: Vec<usize> = (0..customers).collect();
    for batch in ids.chunks(10_000) {
        let request = proto::UpsertCustomersRequest {
            tenant: tenant.to_owned(),
            customers: batch
                .iter()
                .map(|&i| proto::Customer {
                    customer_id: long_id(i),
                    opted_in: Some(true),
                    ..Default::default()
                })
                .collect(),
        };
        client.upsert_customers(request).await.unwrap();
    }
}

/// A channel whose windows hold 64 KiB, so that a stream it does not read
/// stays open on the server.
async fn slow_channel(server: &TestServer) -> Channel {
    Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap()
}

fn export_request(tenant: &str) -> proto::ExportAudienceRequest {
    proto::ExportAudienceRequest {
        tenant: tenant.to_owned(),
        audience: Some(proto::export_audience_request::Audience::RuleText(
            "opted_in".to_owned(),
        )),
        ..Default::default()
    }
}

fn count_request(tenant: &str, rule: &str) -> proto::CountAudienceRequest {
    proto::CountAudienceRequest {
        tenant: tenant.to_owned(),
        audience: Some(proto::count_audience_request::Audience::RuleText(
            rule.to_owned(),
        )),
        ..Default::default()
    }
}

/// The metrics page: each sample line's name and labels, to its value.
fn scrape(address: std::net::SocketAddr) -> HashMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: segmentd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn calls(metrics: &HashMap<String, f64>, method: &str, code: &str) -> f64 {
    let series = format!("segmentd_grpc_calls_total{{method=\"{method}\",code=\"{code}\"}}");
    metrics.get(&series).copied().unwrap_or(0.0)
}

async fn start_observed(
    data: &std::path::Path,
    max_calls: usize,
) -> (TestServer, std::net::SocketAddr) {
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = metrics.local_addr().unwrap();
    let options = ServeOptions {
        metrics: Some(metrics),
        max_concurrent_calls: max_calls,
        ..Default::default()
    };
    (TestServer::start_configured(data, options).await, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_limit_are_shed_and_a_stream_holds_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_observed(dir.path(), 1).await;
    let customers = 30_000;
    seed(&server.channel().await, "big", customers).await;

    // An export the caller does not read holds the only slot.
    let slow = slow_channel(&server).await;
    let mut stream = SegmentServiceClient::new(slow)
        .export_audience(export_request("big"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.total_count, customers as u64);

    let mut client = SegmentServiceClient::new(server.channel().await);
    let shed = client
        .count_audience(count_request("big", "opted_in"))
        .await;
    let status = shed.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("--max-concurrent-calls"),
        "{status:?}"
    );
    assert_eq!(
        scrape(metrics).get("segmentd_grpc_calls_in_flight"),
        Some(&1.0)
    );

    // The caller goes away: the slot is free again.
    drop(stream);
    let mut refused = 1;
    let answer = loop {
        match client
            .count_audience(count_request("big", "opted_in"))
            .await
        {
            Ok(answer) => break answer.into_inner().count,
            Err(status) if status.code() == Code::ResourceExhausted && refused < 200 => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(answer, customers as u64);

    let scraped = scrape(metrics);
    assert_eq!(
        scraped.get("segmentd_grpc_calls_shed_total"),
        Some(&(refused as f64))
    );
    assert_eq!(
        calls(&scraped, "CountAudience", "RESOURCE_EXHAUSTED"),
        refused as f64
    );
    assert_eq!(calls(&scraped, "ExportAudience", "CANCELLED"), 1.0);
    assert_eq!(scraped.get("segmentd_grpc_calls_in_flight"), Some(&0.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_a_stream_and_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_observed(dir.path(), 16).await;
    let customers = 30_000;
    seed(&server.channel().await, "big", customers).await;

    let mut request = tonic::Request::new(export_request("big"));
    request.set_timeout(Duration::from_millis(500));
    let mut stream = SegmentServiceClient::new(slow_channel(&server).await)
        .export_audience(request)
        .await
        .unwrap()
        .into_inner();
    let mut received = stream.message().await.unwrap().unwrap().customer_ids.len();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let ended = loop {
        match stream.message().await {
            Ok(Some(message)) => received += message.customer_ids.len(),
            Ok(None) => panic!("the stream ran to its end past its deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert!(received < customers, "{received} of {customers}");

    // A call whose deadline is (nearly) over when it arrives is answered
    // DEADLINE_EXCEEDED by the server, never OK. The client's own timer,
    // which fires at the deadline itself, may answer first (CANCELLED), so
    // the server's answer is read from its metrics.
    let mut client = SegmentServiceClient::new(server.channel().await);
    let attempts = 3;
    for _ in 0..attempts {
        let mut request = tonic::Request::new(count_request("big", "opted_in"));
        request.set_timeout(Duration::from_micros(1_900));
        let status = client.count_audience(request).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    let mut scraped = scrape(metrics);
    for _ in 0..100 {
        if calls(&scraped, "CountAudience", "DEADLINE_EXCEEDED")
            + calls(&scraped, "CountAudience", "CANCELLED")
            >= attempts as f64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        scraped = scrape(metrics);
    }
    assert_eq!(calls(&scraped, "CountAudience", "OK"), 0.0);
    assert!(
        calls(&scraped, "CountAudience", "DEADLINE_EXCEEDED") >= 1.0,
        "{scraped:?}"
    );

    assert_eq!(calls(&scraped, "ExportAudience", "DEADLINE_EXCEEDED"), 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_method_and_code_and_tenant_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_observed(dir.path(), 16).await;
    let mut client = SegmentServiceClient::new(server.channel().await);

    let upserted = 7;
    let request = proto::UpsertCustomersRequest {
        tenant: "m".to_owned(),
        customers: (0..upserted)
            .map(|i| proto::Customer {
                customer_id: format!("c{i}"),
                opted_in: Some(i % 2 == 0),
                ..Default::default()
            })
            .collect(),
    };
    client.upsert_customers(request).await.unwrap();
    let (ok, missing, bad) = (3, 2, 1);
    for _ in 0..ok {
        client
            .count_audience(count_request("m", "opted_in"))
            .await
            .unwrap();
    }
    for _ in 0..missing {
        let refused = client
            .count_audience(count_request("nobody", "opted_in"))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::NotFound);
    }
    for _ in 0..bad {
        let refused = client
            .count_audience(count_request("m", "opted_in AND ("))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::InvalidArgument);
    }

    let scraped = scrape(metrics);
    assert_eq!(calls(&scraped, "UpsertCustomers", "OK"), 1.0);
    assert_eq!(calls(&scraped, "CountAudience", "OK"), ok as f64);
    assert_eq!(
        calls(&scraped, "CountAudience", "NOT_FOUND"),
        missing as f64
    );
    assert_eq!(
        calls(&scraped, "CountAudience", "INVALID_ARGUMENT"),
        bad as f64
    );
    let timed = scraped
        .get("segmentd_grpc_call_seconds_count{method=\"CountAudience\"}")
        .copied();
    assert_eq!(timed, Some((ok + missing + bad) as f64));
    assert_eq!(
        scraped.get("segmentd_tenant_customers{tenant=\"m\"}"),
        Some(&(upserted as f64))
    );
    assert!(
        scraped
            .get("segmentd_store_commits_total")
            .is_some_and(|n| *n >= 1.0)
    );
    assert_eq!(
        scraped.get("segmentd_store_commits_total"),
        scraped.get("segmentd_store_commit_seconds_count")
    );
    assert_eq!(scraped.get("segmentd_grpc_calls_in_flight"), Some(&0.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_same_answers_and_refuses_plaintext() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.pem();
    let key = certified.signing_key.serialize_pem();
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        tls: Some((cert.clone().into_bytes(), key.into_bytes())),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let path = dir.path().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        segmentd::server::serve_configured(listener, &path, options, async {
            let _ = stopped.await;
        })
        .await
    });

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let mut channel = None;
    for _ in 0..200 {
        if let Ok(connected) = endpoint.connect().await {
            channel = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut client = SegmentServiceClient::new(channel.expect("the TLS server never answered"));
    let request = proto::UpsertCustomersRequest {
        tenant: "t".to_owned(),
        customers: vec![proto::Customer {
            customer_id: "only".to_owned(),
            opted_in: Some(true),
            ..Default::default()
        }],
    };
    client.upsert_customers(request).await.unwrap();
    let counted = client
        .count_audience(count_request("t", "opted_in"))
        .await
        .unwrap();
    assert_eq!(counted.into_inner().count, 1);

    // The same port in plaintext gets no answer.
    let plain = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Ok(plain) = plain.connect().await {
        let refused = SegmentServiceClient::new(plain)
            .count_audience(count_request("t", "opted_in"))
            .await;
        assert!(refused.is_err());
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_requests_get_the_callers_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    // CountAudienceRequest with `tenant` (field 1, length-delimited) set to
    // bytes that are not UTF-8.
    let message = vec![0x0a, 0x02, 0xff, 0xfe];
    let path = http::uri::PathAndQuery::from_static("/segmentd.v1.SegmentService/CountAudience");
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(tonic::Request::new(message), path, common::Raw)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("CountAudienceRequest.tenant"),
        "{status:?}"
    );

    // A message over the 16 MiB limit is refused as a limit.
    let huge = 17 << 20;
    let mut message = vec![0x0a];
    let mut len = huge as u64;
    while len >= 0x80 {
        message.push((len as u8) | 0x80);
        len >>= 7;
    }
    message.push(len as u8);
    message.resize(message.len() + huge, b'a');
    let path = http::uri::PathAndQuery::from_static("/segmentd.v1.SegmentService/CountAudience");
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(tonic::Request::new(message), path, common::Raw)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // The server is still there.
    let mut client = SegmentServiceClient::new(server.channel().await);
    let missing = client.count_audience(count_request("t", "opted_in")).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    server.stop().await;
}

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_take_every_slot() {
    const ADMIN: &str = "operations-admin-key-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        admin_key: Some(ADMIN.to_owned()),
        max_concurrent_calls: 4,
        max_calls_per_tenant: 1,
        ..Default::default()
    };
    let server = TestServer::start_configured(dir.path(), options).await;
    let channel = server.channel().await;
    let mut admin = proto::admin_service_client::AdminServiceClient::new(channel.clone());
    let mut keys = Vec::new();
    for tenant in ["busy", "quiet"] {
        let create = proto::CreateTenantRequest {
            tenant: tenant.to_owned(),
            time_zone: String::new(),
        };
        admin.create_tenant(keyed(create, ADMIN)).await.unwrap();
        let issue = proto::CreateApiKeyRequest {
            tenant: tenant.to_owned(),
            label: String::new(),
        };
        let made = admin.create_api_key(keyed(issue, ADMIN)).await.unwrap();
        keys.push(made.into_inner().secret);
    }
    let (busy, quiet) = (&keys[0], &keys[1]);

    let customers = 30_000;
    let mut client = SegmentServiceClient::new(channel.clone());
    let ids: Vec<usize> = (0..customers).collect();
    for batch in ids.chunks(10_000) {
        let request = proto::UpsertCustomersRequest {
            tenant: "busy".to_owned(),
            customers: batch
                .iter()
                .map(|&i| proto::Customer {
                    customer_id: long_id(i),
                    opted_in: Some(true),
                    ..Default::default()
                })
                .collect(),
        };
        client.upsert_customers(keyed(request, busy)).await.unwrap();
    }

    // An unread export of `busy` holds its only slot.
    let mut stream = SegmentServiceClient::new(slow_channel(&server).await)
        .export_audience(keyed(export_request("busy"), busy))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();

    let refused = client
        .count_audience(keyed(count_request("busy", "opted_in"), busy))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-calls-per-tenant"),
        "{refused:?}"
    );
    // The other tenant is served, from the server's free slots.
    let counted = client
        .count_audience(keyed(count_request("quiet", "opted_in"), quiet))
        .await
        .unwrap();
    assert_eq!(counted.into_inner().count, 0);

    drop(stream);
    let mut answer = None;
    for _ in 0..200 {
        match client
            .count_audience(keyed(count_request("busy", "opted_in"), busy))
            .await
        {
            Ok(counted) => {
                answer = Some(counted.into_inner().count);
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    assert_eq!(answer, Some(customers as u64));
    server.stop().await;
}
