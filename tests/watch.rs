//! The change feed through gRPC against a real server: the first members,
//! changes from writes, edits, deletes and the clock, resumption by
//! sequence number, a restart, retention, and bad requests.
//!
//! Expected members are written out by hand from the customers each test
//! creates; the stream's sum (members plus every change) is compared with
//! them and with `ResolveSegment`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    ChangeCause, CreateSegmentRequest, Customer, DeleteCustomersRequest, Event,
    RecordEventsRequest, Segment, UpdateSegmentRequest, UpsertCustomersRequest,
    WatchSegmentChangesRequest, WatchSegmentChangesResponse, event,
};
use segmentd::server::ServeOptions;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const TENANT: &str = "shop";

fn customer(id: &str, opted_in: bool, tags: &[&str]) -> Customer {
    Customer {
        customer_id: id.to_owned(),
        opted_in: Some(opted_in),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    }
}

async fn upsert(client: &mut SegmentServiceClient<Channel>, customers: Vec<Customer>) {
    client
        .upsert_customers(UpsertCustomersRequest {
            tenant: TENANT.to_owned(),
            customers,
        })
        .await
        .unwrap();
}

async fn create_segment(client: &mut SegmentServiceClient<Channel>, id: &str, rule: &str) {
    client
        .create_segment(CreateSegmentRequest {
            tenant: TENANT.to_owned(),
            segment_id: id.to_owned(),
            segment: Some(Segment {
                title: id.to_owned(),
                rule_text: rule.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

async fn watch(
    client: &mut SegmentServiceClient<Channel>,
    segments: &[&str],
    after: Option<u64>,
) -> Result<Streaming<WatchSegmentChangesResponse>, tonic::Status> {
    client
        .watch_segment_changes(WatchSegmentChangesRequest {
            tenant: TENANT.to_owned(),
            segment_ids: segments.iter().map(|s| (*s).to_owned()).collect(),
            after_sequence: after,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The next message, or a failure after 20 s.
async fn next(stream: &mut Streaming<WatchSegmentChangesResponse>) -> WatchSegmentChangesResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a change within 20 s")
        .expect("the stream goes on")
        .expect("a message")
}

/// Whether the stream stays quiet for `wait`.
async fn quiet(stream: &mut Streaming<WatchSegmentChangesResponse>, wait: Duration) -> bool {
    tokio::time::timeout(wait, stream.message()).await.is_err()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// Members as told by a stream: entered added, left taken out.
#[derive(Default)]
struct Told {
    members: BTreeSet<String>,
    last: u64,
}

impl Told {
    fn apply(&mut self, change: &WatchSegmentChangesResponse) {
        for id in &change.entered_customer_ids {
            assert!(self.members.insert(id.clone()), "{id} entered twice");
        }
        for id in &change.left_customer_ids {
            assert!(self.members.remove(id), "{id} left without being in");
        }
        if change.cause != ChangeCause::Initial as i32 {
            assert!(change.sequence > self.last, "sequence went back");
        }
        self.last = change.sequence;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_starts_with_the_members_and_follows_writes_edits_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    upsert(
        &mut client,
        vec![
            customer("a", true, &["vip"]),
            customer("b", true, &[]),
            customer("c", false, &["vip"]),
            customer("d", true, &["VIP "]),
        ],
    )
    .await;
    create_segment(&mut client, "vips", r#"opted_in AND tag = "vip""#).await;
    create_segment(&mut client, "others", r#"NOT segment = "vips""#).await;

    let mut stream = watch(&mut client, &["vips", "others"], None).await.unwrap();
    let mut vips = Told::default();
    let mut others = Told::default();
    for n in 0..2 {
        let first = next(&mut stream).await;
        assert_eq!(first.cause, ChangeCause::Initial as i32);
        // The second and last INITIAL message says the members are complete.
        assert_eq!(first.initial_complete, n == 1);
        match first.segment_id.as_str() {
            "vips" => vips.apply(&first),
            "others" => others.apply(&first),
            other => panic!("unexpected segment {other}"),
        }
    }
    assert_eq!(vips.members, set(&["a", "d"]));
    assert_eq!(others.members, set(&["b", "c"]));

    // c opts in: it moves from one segment to the other, in one write.
    upsert(&mut client, vec![customer("c", true, &["vip"])]).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let change = next(&mut stream).await;
        assert_eq!(change.cause, ChangeCause::Write as i32);
        seen.push(change.sequence);
        match change.segment_id.as_str() {
            "vips" => vips.apply(&change),
            _ => others.apply(&change),
        }
    }
    assert_eq!(vips.members, set(&["a", "c", "d"]));
    assert_eq!(others.members, set(&["b"]));
    assert!(seen[0] < seen[1]);

    // A delete: a leaves, told by its own id though it is gone.
    client
        .delete_customers(DeleteCustomersRequest {
            tenant: TENANT.to_owned(),
            customer_ids: vec!["a".to_owned()],
        })
        .await
        .unwrap();
    let change = next(&mut stream).await;
    assert_eq!(change.segment_id, "vips");
    assert_eq!(change.left_customer_ids, vec!["a".to_owned()]);
    vips.apply(&change);

    // An edit: the rule drops opted_in, which brings no one new here, then
    // asks for the tag alone among customers b and d.
    let segment = client
        .update_segment(UpdateSegmentRequest {
            tenant: TENANT.to_owned(),
            segment_id: "vips".to_owned(),
            segment: Some(Segment {
                rule_text: r#"tag = "vip" AND customer IN ("b", "d")"#.to_owned(),
                ..Default::default()
            }),
            version: 1,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rule_text".to_owned()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(segment.segment.unwrap().version, 2);
    // vips loses c; others, NOT vips, gains it back.
    for _ in 0..2 {
        let change = next(&mut stream).await;
        assert_eq!(change.cause, ChangeCause::SegmentEdit as i32);
        match change.segment_id.as_str() {
            "vips" => vips.apply(&change),
            _ => others.apply(&change),
        }
    }
    assert_eq!(vips.members, set(&["d"]));
    assert_eq!(others.members, set(&["b", "c"]));
    assert_eq!(
        server.members(TENANT, r#"segment = "vips""#).await,
        vips.members
    );
    assert_eq!(
        server.members(TENANT, r#"segment = "others""#).await,
        others.members
    );

    // A new title, and archiving, move no one: nothing is told.
    client
        .update_segment(UpdateSegmentRequest {
            tenant: TENANT.to_owned(),
            segment_id: "vips".to_owned(),
            segment: Some(Segment {
                title: "VIPs".to_owned(),
                ..Default::default()
            }),
            version: 2,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".to_owned()],
            }),
        })
        .await
        .unwrap();
    client
        .archive_segment(segmentd::proto::ArchiveSegmentRequest {
            tenant: TENANT.to_owned(),
            segment_id: "others".to_owned(),
        })
        .await
        .unwrap();
    assert!(quiet(&mut stream, Duration::from_millis(500)).await);

    // A write that touches nothing either segment reads tells nothing.
    client
        .record_events(RecordEventsRequest {
            tenant: TENANT.to_owned(),
            events: vec![Event {
                event_id: "m1".to_owned(),
                customer_id: "b".to_owned(),
                time: Some(common::ts("2026-01-01T00:00:00Z")),
                kind: Some(event::Kind::Message(event::Message {})),
            }],
        })
        .await
        .unwrap();
    assert!(quiet(&mut stream, Duration::from_millis(500)).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_a_sequence_with_no_gap_and_no_repeat_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    upsert(&mut client, vec![customer("seed", false, &[])]).await;
    create_segment(&mut client, "opted", "opted_in").await;
    // Twelve writes, each bringing one customer in: twelve entries.
    for i in 0..12 {
        upsert(&mut client, vec![customer(&format!("c{i:02}"), true, &[])]).await;
    }
    let all: Vec<_> = {
        let mut stream = watch(&mut client, &["opted"], Some(0)).await.unwrap();
        let mut all = Vec::new();
        for _ in 0..12 {
            all.push(next(&mut stream).await);
        }
        assert!(quiet(&mut stream, Duration::from_millis(300)).await);
        all
    };
    let entered: Vec<_> = all
        .iter()
        .flat_map(|change| change.entered_customer_ids.clone())
        .collect();
    let expected: Vec<_> = (0..12).map(|i| format!("c{i:02}")).collect();
    assert_eq!(entered, expected);

    // Read five, drop the stream, resume after the fifth.
    let fifth = all[4].sequence;
    let mut resumed = watch(&mut client, &["opted"], Some(fifth)).await.unwrap();
    for change in &all[5..] {
        assert_eq!(&next(&mut resumed).await, change);
    }
    assert!(quiet(&mut resumed, Duration::from_millis(300)).await);
    drop(resumed);

    // Stop and start again: the stored feed is still there, and numbers
    // go on from where they were.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let mut after_restart = watch(&mut client, &["opted"], Some(fifth)).await.unwrap();
    for change in &all[5..] {
        assert_eq!(&next(&mut after_restart).await, change);
    }
    client
        .delete_customers(DeleteCustomersRequest {
            tenant: TENANT.to_owned(),
            customer_ids: vec!["c03".to_owned()],
        })
        .await
        .unwrap();
    let change = next(&mut after_restart).await;
    assert_eq!(change.left_customer_ids, vec!["c03".to_owned()]);
    assert_eq!(change.sequence, all[11].sequence + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_leave_an_hour_window_as_the_clock_moves_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        watch_tick: Duration::from_millis(200),
        ..Default::default()
    };
    let server = TestServer::start_configured(dir.path(), options).await;
    let mut client = server.client().await;
    let now = chrono::Utc::now().timestamp();
    // One order 10 s short of an hour old, one 30 minutes old.
    let order = |id: &str, customer: &str, age: i64| Event {
        event_id: id.to_owned(),
        customer_id: customer.to_owned(),
        time: Some(prost_types::Timestamp {
            seconds: now - age,
            nanos: 0,
        }),
        kind: Some(event::Kind::Order(event::Order { value_cents: 100 })),
    };
    client
        .record_events(RecordEventsRequest {
            tenant: TENANT.to_owned(),
            events: vec![order("o1", "old", 3_600 - 10), order("o2", "new", 1_800)],
        })
        .await
        .unwrap();
    create_segment(&mut client, "recent", "ordered WITHIN 1h").await;
    let mut stream = watch(&mut client, &["recent"], None).await.unwrap();
    let mut told = Told::default();
    told.apply(&next(&mut stream).await);
    assert_eq!(told.members, set(&["new", "old"]));

    let change = next(&mut stream).await;
    assert_eq!(change.cause, ChangeCause::Time as i32);
    assert_eq!(change.left_customer_ids, vec!["old".to_owned()]);
    let left_at = change.time.as_ref().unwrap().seconds;
    // It left once its order was an hour old, within a tick or so.
    assert!(
        left_at >= now + 10,
        "left at {left_at}, before the hour was up"
    );
    told.apply(&change);
    assert_eq!(told.members, set(&["new"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_outside_the_feed_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        watch_tick: Duration::from_millis(100),
        watch_retention: Duration::from_secs(1),
        ..Default::default()
    };
    let server = TestServer::start_configured(dir.path(), options).await;
    let mut client = server.client().await;
    upsert(&mut client, vec![customer("a", true, &[])]).await;
    create_segment(&mut client, "opted", "opted_in").await;
    upsert(&mut client, vec![customer("b", true, &[])]).await;

    let code = |result: Result<_, tonic::Status>| match result {
        Ok(_) => panic!("refusal expected"),
        Err(status) => (status.code(), status.message().to_owned()),
    };
    let (status, message) = code(watch(&mut client, &["opted"], Some(1_000)).await);
    assert_eq!(status, Code::OutOfRange, "{message}");
    assert!(message.contains("ahead"), "{message}");

    // The retention is one second: the entries are pruned after it.
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Err(status) = watch(&mut client, &["opted"], Some(0)).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("sequence 0 refused once the entries are pruned");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("without after_sequence"),
        "{}",
        status.message()
    );
    // Watching afresh still gives everyone.
    let mut stream = watch(&mut client, &["opted"], None).await.unwrap();
    let mut told = Told::default();
    told.apply(&next(&mut stream).await);
    assert_eq!(told.members, set(&["a", "b"]));

    // A segment with no members still gets its INITIAL message.
    create_segment(&mut client, "nobody", "NOT opted_in").await;
    let mut stream = watch(&mut client, &["nobody"], None).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.segment_id, "nobody");
    assert!(first.entered_customer_ids.is_empty());
    assert!(first.initial_complete);

    let (status, message) = code(watch(&mut client, &[], None).await);
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("segment_ids"), "{message}");
    let (status, message) = code(watch(&mut client, &["opted", ""], None).await);
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("segment_ids[1]"), "{message}");
    let many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, _) = code(watch(&mut client, &many, None).await);
    assert_eq!(status, Code::InvalidArgument);
    let (status, message) = code(watch(&mut client, &["nope"], None).await);
    assert_eq!(status, Code::NotFound);
    assert!(message.contains("nope"), "{message}");
    let (status, _) = code(
        client
            .watch_segment_changes(WatchSegmentChangesRequest {
                tenant: "elsewhere".to_owned(),
                segment_ids: vec!["opted".to_owned()],
                after_sequence: None,
            })
            .await
            .map(tonic::Response::into_inner),
    );
    assert_eq!(status, Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmentd_watch_prints_a_line_per_change() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    upsert(&mut client, vec![customer("a", true, &[])]).await;
    create_segment(&mut client, "opted", "opted_in").await;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args([
            "watch",
            "--server",
            &server.addr.to_string(),
            "--tenant",
            TENANT,
        ])
        .args(["--segment", "opted"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let line = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line within 20 s")
    };
    // The members first, at the head: the segment's creation was change 1.
    assert_eq!(line(), "1 opted initial +a");
    upsert(
        &mut client,
        vec![customer("b", true, &[]), customer("a", false, &[])],
    )
    .await;
    assert_eq!(line(), "2 opted write +b -a");
    child.kill().unwrap();
    child.wait().unwrap();
    server.stop().await;
}
