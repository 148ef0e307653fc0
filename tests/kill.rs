//! Kill test: several clients stream write batches at a real `segmentd
//! serve` child process while it is killed with SIGKILL at random moments
//! and restarted. A ledger kept by the clients says which batches were
//! acknowledged; after every restart each acknowledged batch must be there
//! exactly once, and no batch may be there in part.
//!
//! Cycles: `SEGMENTD_KILL_CYCLES` (default 20; the README's long mode runs
//! thousands).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    CountAudienceRequest, Event, RecordEventsRequest, ResolveSegmentRequest,
    count_audience_request, event, resolve_segment_request,
};
use tonic::transport::Channel;

const CLIENTS: usize = 3;
/// Orders per batch, one per new customer, so a batch is visible as customers.
const BATCH: usize = 50;
const TENANT: &str = "kill";

#[derive(Default, Clone)]
struct Ledger {
    /// Batches whose reply said OK.
    acknowledged: BTreeSet<String>,
    /// Batches sent whose reply never came (the server died first).
    uncertain: BTreeSet<String>,
}

/// Kill cycles: `SEGMENTD_KILL_CYCLES`, 20 by default.
fn kill_cycles() -> usize {
    std::env::var("SEGMENTD_KILL_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

/// A fixed-seed sequence of kill delays, `low` to `low + span` ms.
fn kill_delays(mut seed: u64, low: u64, span: u64) -> impl FnMut() -> Duration {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(low + seed % span)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        // Small, so that kills land on delta rows and on checkpoints alike.
        .args(["--checkpoint-bytes", "4096"])
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn connect(port: u16) -> SegmentServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            let mut client = SegmentServiceClient::new(channel);
            // A call that needs storage open: answers once serving.
            let probe = segmentd::proto::GetTenantRequest {
                tenant: TENANT.into(),
            };
            match client.get_tenant(probe).await {
                Ok(_) => return client,
                Err(status) if status.code() == tonic::Code::NotFound => return client,
                Err(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "server on {port} never answered");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn batch_events(batch: &str) -> Vec<Event> {
    (0..BATCH)
        .map(|i| Event {
            event_id: format!("{batch}/{i}"),
            customer_id: format!("{batch}/{i}"),
            time: Some(prost_types::Timestamp {
                seconds: 1_767_225_600 + i as i64,
                nanos: 0,
            }),
            kind: Some(event::Kind::Order(event::Order { value_cents: 100 })),
        })
        .collect()
}

/// A client of the server on `port`, if it is still up.
async fn client_of(port: u16) -> Option<SegmentServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .ok()?;
    Some(SegmentServiceClient::new(channel))
}

/// Sends batches until the server dies; records each in the ledger.
async fn writer(port: u16, cycle: usize, client_no: usize, ledger: Arc<Mutex<Ledger>>) {
    let Some(mut client) = client_of(port).await else {
        return;
    };
    for n in 0.. {
        let batch = format!("c{cycle}-w{client_no}-b{n}");
        let request = RecordEventsRequest {
            tenant: TENANT.into(),
            events: batch_events(&batch),
        };
        ledger.lock().unwrap().uncertain.insert(batch.clone());
        match client.record_events(request).await {
            Ok(_) => {
                let mut ledger = ledger.lock().unwrap();
                ledger.uncertain.remove(&batch);
                ledger.acknowledged.insert(batch);
            }
            Err(_) => return,
        }
    }
}

/// Every customer id of the tenant, by paging through `order_count >= 0`.
async fn customers(client: &mut SegmentServiceClient<Channel>, rule: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ResolveSegmentRequest {
            tenant: TENANT.into(),
            audience: Some(resolve_segment_request::Audience::RuleText(rule.into())),
            page_size: 10_000,
            page_token,
            ..ResolveSegmentRequest::default()
        };
        let page = client.resolve_segment(request).await.unwrap().into_inner();
        ids.extend(page.customer_ids);
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

async fn count(client: &mut SegmentServiceClient<Channel>, rule: &str) -> u64 {
    let request = CountAudienceRequest {
        tenant: TENANT.into(),
        audience: Some(count_audience_request::Audience::RuleText(rule.into())),
        as_of: None,
        ..Default::default()
    };
    match client.count_audience(request).await {
        Ok(response) => response.into_inner().count,
        Err(status) if status.code() == tonic::Code::NotFound => 0,
        Err(status) => panic!("count `{rule}`: {status}"),
    }
}

/// Checks the data against the ledger: acknowledged batches whole, no
/// batch in part, every order once.
async fn verify(client: &mut SegmentServiceClient<Channel>, ledger: &Ledger) -> usize {
    let everyone = if count(client, "order_count >= 0").await == 0 {
        Vec::new()
    } else {
        customers(client, "order_count >= 0").await
    };
    let mut per_batch: BTreeMap<String, usize> = BTreeMap::new();
    for id in &everyone {
        let (batch, _) = id.rsplit_once('/').unwrap();
        *per_batch.entry(batch.to_owned()).or_default() += 1;
    }
    for (batch, customers) in &per_batch {
        assert_eq!(*customers, BATCH, "batch {batch} is there in part");
        assert!(
            ledger.acknowledged.contains(batch) || ledger.uncertain.contains(batch),
            "batch {batch} was never sent"
        );
    }
    for batch in &ledger.acknowledged {
        assert!(
            per_batch.contains_key(batch),
            "acknowledged batch {batch} is lost"
        );
    }
    // Exactly once: one order of 1.00 per customer.
    assert_eq!(
        count(client, "order_count > 1").await,
        0,
        "an order counted twice"
    );
    assert_eq!(count(client, "spent = 1").await, everyone.len() as u64);
    per_batch.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_sigkill_exactly_once() {
    let cycles = kill_cycles();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // A fixed-seed sequence of kill delays, 20 to 400 ms.
    let mut delay = kill_delays(0x6b11_7e57, 20, 380);

    for cycle in 0..cycles {
        let port = free_port();
        let mut server = start(dir.path(), port);
        let mut client = connect(port).await;
        let snapshot = ledger.lock().unwrap().clone();
        verify(&mut client, &snapshot).await;

        let writers: Vec<_> = (0..CLIENTS)
            .map(|n| tokio::spawn(writer(port, cycle, n, ledger.clone())))
            .collect();
        tokio::time::sleep(delay()).await;
        server.kill().unwrap();
        server.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }

    // A last clean start: retrying the uncertain batches applies each once.
    let port = free_port();
    let mut server = start(dir.path(), port);
    let mut client = connect(port).await;
    let uncertain: Vec<String> = ledger.lock().unwrap().uncertain.iter().cloned().collect();
    for batch in uncertain {
        let request = RecordEventsRequest {
            tenant: TENANT.into(),
            events: batch_events(&batch),
        };
        client.record_events(request).await.unwrap();
        let mut ledger = ledger.lock().unwrap();
        ledger.uncertain.remove(&batch);
        ledger.acknowledged.insert(batch);
    }
    let snapshot = ledger.lock().unwrap().clone();
    let batches = verify(&mut client, &snapshot).await;
    let acknowledged = ledger.lock().unwrap().acknowledged.len();
    assert_eq!(batches, acknowledged);
    assert!(
        acknowledged > cycles,
        "too few writes got through to test anything: {acknowledged}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for cycle in 0..5 {
        let port = free_port();
        let server = start(dir.path(), port);
        let mut client = connect(port).await;
        let snapshot = ledger.lock().unwrap().clone();
        verify(&mut client, &snapshot).await;

        let writers: Vec<_> = (0..CLIENTS)
            .map(|n| tokio::spawn(writer(port, 1000 + cycle, n, ledger.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + 50 * cycle as u64)).await;
        let pid = server.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::task::spawn_blocking(move || {
            let mut server = server;
            server.wait().unwrap()
        })
        .await
        .unwrap();
        assert!(
            status.success(),
            "serve exited with {status} on SIGTERM under load"
        );
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let port = free_port();
    let mut server = start(dir.path(), port);
    let mut client = connect(port).await;
    let snapshot = ledger.lock().unwrap().clone();
    verify(&mut client, &snapshot).await;
    assert!(
        snapshot.acknowledged.len() >= 5,
        "too few writes to test anything"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Follows segment `all` (everyone who ordered) from `after` until the
/// stream ends, applying every change to `told` (members, last sequence).
async fn follow(port: u16, after: Option<u64>, told: Arc<Mutex<(BTreeSet<String>, u64)>>) {
    use segmentd::proto::{ChangeCause, WatchSegmentChangesRequest};
    let Some(mut client) = client_of(port).await else {
        return;
    };
    let request = WatchSegmentChangesRequest {
        tenant: TENANT.into(),
        segment_ids: vec!["all".into()],
        after_sequence: after,
    };
    let mut stream = match client.watch_segment_changes(request).await {
        Ok(stream) => stream.into_inner(),
        // The server died under the call (a transport error) or is going.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ) =>
        {
            return;
        }
        // An answer of the server's own: a sequence it showed before a kill
        // must still be there after, and the segment too.
        Err(status) => panic!("watch after {after:?}: {status}"),
    };
    while let Ok(Some(change)) = stream.message().await {
        let mut told = told.lock().unwrap();
        let (members, last) = &mut *told;
        if change.cause != ChangeCause::Initial as i32 {
            assert!(
                change.sequence > *last,
                "sequence {} after {last}",
                change.sequence
            );
        }
        *last = change.sequence;
        for id in change.entered_customer_ids {
            assert!(members.insert(id.clone()), "{id} entered twice");
        }
        for id in change.left_customer_ids {
            assert!(members.remove(&id), "{id} left while out");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_misses_nothing_and_sees_nothing_twice_across_sigkills() {
    let cycles = kill_cycles();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let told = Arc::new(Mutex::new((BTreeSet::new(), 0u64)));
    let mut delay = kill_delays(0x5eed_f00d, 50, 350);

    // The tenant and its segment, before any kill.
    let port = free_port();
    let mut server = start(dir.path(), port);
    let mut client = connect(port).await;
    let request = RecordEventsRequest {
        tenant: TENANT.into(),
        events: batch_events("first"),
    };
    client.record_events(request).await.unwrap();
    ledger.lock().unwrap().acknowledged.insert("first".into());
    let request = segmentd::proto::CreateSegmentRequest {
        tenant: TENANT.into(),
        segment_id: "all".into(),
        segment: Some(segmentd::proto::Segment {
            rule_text: "ordered".into(),
            ..Default::default()
        }),
    };
    client.create_segment(request).await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    let mut after = None;
    for cycle in 0..cycles {
        let port = free_port();
        let mut server = start(dir.path(), port);
        connect(port).await;
        let watcher = tokio::spawn(follow(port, after, told.clone()));
        let writers: Vec<_> = (0..CLIENTS)
            .map(|n| tokio::spawn(writer(port, cycle, n, ledger.clone())))
            .collect();
        tokio::time::sleep(delay()).await;
        server.kill().unwrap();
        server.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
        watcher.await.unwrap();
        after = Some(told.lock().unwrap().1);
    }

    // A last start: the watcher catches up, and what it was told is
    // exactly the segment's members, every acknowledged batch among them.
    let port = free_port();
    let mut server = start(dir.path(), port);
    let mut client = connect(port).await;
    let watcher = tokio::spawn(follow(port, after, told.clone()));
    let members: BTreeSet<String> = customers(&mut client, "segment = \"all\"")
        .await
        .into_iter()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.lock().unwrap().0 != members && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (told_members, _) = told.lock().unwrap().clone();
    assert_eq!(told_members.len(), members.len());
    assert!(told_members == members, "the feed told other members");
    for batch in &ledger.lock().unwrap().acknowledged {
        assert!(
            members.contains(&format!("{batch}/0")),
            "acknowledged batch {batch} is not in the segment"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
    watcher.await.unwrap();
}
