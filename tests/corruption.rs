//! Damaged data directories: truncated files and flipped bytes in copies of
//! a closed directory. `serve` must either refuse to start with a clear
//! message, or start and give exactly the counts the undamaged directory
//! gave; never panic, never serve different counts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, ts};
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    CountAudienceRequest, Customer, Event, RecordEventsRequest, UpsertCustomersRequest,
    count_audience_request, event,
};

const RULES: [&str; 4] = [
    "order_count >= 0",
    "spent >= 50",
    "tag = \"vip\" AND ordered WITHIN 30d",
    "NOT opted_in",
];
const AS_OF: &str = "2026-02-01T00:00:00Z";

/// A way to damage a file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

async fn counts(client: &mut SegmentServiceClient<tonic::transport::Channel>) -> Vec<u64> {
    let mut counts = Vec::new();
    for rule in RULES {
        let request = CountAudienceRequest {
            tenant: "shop".into(),
            audience: Some(count_audience_request::Audience::RuleText(rule.into())),
            as_of: Some(ts(AS_OF)),
            ..Default::default()
        };
        counts.push(
            client
                .count_audience(request)
                .await
                .unwrap()
                .into_inner()
                .count,
        );
    }
    counts
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else if std::fs::metadata(&path).unwrap().len() > 0 {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Starts `serve` on a damaged copy: `None` when it refused (after checking
/// the refusal is a clear message, not a panic), else the counts it serves.
async fn try_serve(data: &Path) -> Option<Vec<u64>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(server.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            // A refusal ends with our one-line message and exit code 1; a
            // panic that escaped would end with exit code 101.
            assert_eq!(
                status.code(),
                Some(1),
                "serve did not refuse cleanly: {stderr}"
            );
            let last = stderr.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("segmentd: "),
                "no clear message last: {stderr}"
            );
            return None;
        }
        let url = format!("http://127.0.0.1:{port}");
        if let Ok(channel) = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
        {
            let mut client = SegmentServiceClient::new(channel);
            let probe = segmentd::proto::GetTenantRequest {
                tenant: "shop".into(),
            };
            if client.get_tenant(probe).await.is_ok() {
                let counts = counts(&mut client).await;
                server.kill().unwrap();
                server.wait().unwrap();
                return Some(counts);
            }
        }
        assert!(
            Instant::now() < deadline,
            "serve neither started nor refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_directory_is_refused_or_serves_the_same_counts() {
    let original = tempfile::tempdir().unwrap();
    let server = TestServer::start(original.path()).await;
    let mut client = server.client().await;
    let customers = (0..300)
        .map(|i| Customer {
            customer_id: format!("c{i}"),
            tags: if i % 3 == 0 {
                vec!["vip".into()]
            } else {
                vec![]
            },
            opted_in: Some(i % 4 != 0),
            ..Customer::default()
        })
        .collect();
    let request = UpsertCustomersRequest {
        tenant: "shop".into(),
        customers,
    };
    client.upsert_customers(request).await.unwrap();
    for day in 0..30 {
        let events = (0..20)
            .map(|i| Event {
                event_id: format!("o-{day}-{i}"),
                customer_id: format!("c{}", (day * 7 + i * 13) % 300),
                time: Some(prost_types::Timestamp {
                    seconds: 1_767_225_600 + day * 86_400,
                    nanos: 0,
                }),
                kind: Some(event::Kind::Order(event::Order {
                    value_cents: 1_000 + i * 250,
                })),
            })
            .collect();
        let request = RecordEventsRequest {
            tenant: "shop".into(),
            events,
        };
        client.record_events(request).await.unwrap();
    }
    let expected = counts(&mut client).await;
    server.stop().await;

    let mut refused = 0;
    let mut served = 0;
    let originals = files(original.path());
    // A fixed set of damages: for each file, truncate it to half, to one
    // byte, and flip bytes at a few places.
    for (n, file) in originals.iter().enumerate() {
        let relative = file.strip_prefix(original.path()).unwrap().to_owned();
        let len = std::fs::metadata(file).unwrap().len() as usize;
        let damages: Vec<Damage> = vec![
            Box::new(|bytes: &mut Vec<u8>| bytes.truncate(bytes.len() / 2)),
            Box::new(|bytes: &mut Vec<u8>| bytes.truncate(1)),
            Box::new(move |bytes: &mut Vec<u8>| {
                for k in 1..=8 {
                    let at = (len * k / 9 + n) % bytes.len();
                    bytes[at] ^= 0x5a;
                }
            }),
        ];
        for damage in damages {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(original.path(), copy.path());
            let target = copy.path().join(&relative);
            let mut bytes = std::fs::read(&target).unwrap();
            damage(&mut bytes);
            std::fs::write(&target, bytes).unwrap();
            match try_serve(copy.path()).await {
                None => refused += 1,
                Some(counts) => {
                    assert_eq!(
                        counts,
                        expected,
                        "{} damaged: wrong counts served",
                        relative.display()
                    );
                    served += 1;
                }
            }
        }
    }
    eprintln!("{refused} damaged copies refused, {served} served the original counts");
    assert!(refused + served > 0);
}
