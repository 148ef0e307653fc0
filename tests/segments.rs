//! The saved-segment lifecycle through the real API: versions and stale
//! updates, reference cycles, archiving and restoring.

mod common;

use common::TestServer;
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    ArchiveSegmentRequest, CountAudienceRequest, CreateSegmentRequest, Customer,
    ListSegmentsRequest, Segment, UnarchiveSegmentRequest, UpdateSegmentRequest,
    UpsertCustomersRequest, count_audience_request,
};
use tonic::Code;
use tonic::transport::Channel;

type Client = SegmentServiceClient<Channel>;

async fn create(client: &mut Client, id: &str, rule_text: &str) -> Result<Segment, tonic::Status> {
    let request = CreateSegmentRequest {
        tenant: "shop".into(),
        segment_id: id.into(),
        segment: Some(Segment {
            title: id.into(),
            rule_text: rule_text.into(),
            ..Segment::default()
        }),
    };
    client
        .create_segment(request)
        .await
        .map(|r| r.into_inner().segment.unwrap())
}

async fn update(
    client: &mut Client,
    id: &str,
    version: u64,
    segment: Segment,
    mask: &[&str],
) -> Result<Segment, tonic::Status> {
    let request = UpdateSegmentRequest {
        tenant: "shop".into(),
        segment_id: id.into(),
        segment: Some(segment),
        version,
        update_mask: Some(prost_types::FieldMask {
            paths: mask.iter().map(|p| (*p).to_owned()).collect(),
        }),
    };
    client
        .update_segment(request)
        .await
        .map(|r| r.into_inner().segment.unwrap())
}

async fn archive(client: &mut Client, id: &str) -> Result<Segment, tonic::Status> {
    let request = ArchiveSegmentRequest {
        tenant: "shop".into(),
        segment_id: id.into(),
    };
    client
        .archive_segment(request)
        .await
        .map(|r| r.into_inner().segment.unwrap())
}

async fn unarchive(client: &mut Client, id: &str) -> Result<Segment, tonic::Status> {
    let request = UnarchiveSegmentRequest {
        tenant: "shop".into(),
        segment_id: id.into(),
    };
    client
        .unarchive_segment(request)
        .await
        .map(|r| r.into_inner().segment.unwrap())
}

async fn count(client: &mut Client, segment_id: &str) -> u64 {
    let request = CountAudienceRequest {
        tenant: "shop".into(),
        audience: Some(count_audience_request::Audience::SegmentId(
            segment_id.into(),
        )),
        as_of: None,
        ..Default::default()
    };
    client
        .count_audience(request)
        .await
        .unwrap()
        .into_inner()
        .count
}

/// Ten customers: c0..c9, the even ones opted in, c0..c2 tagged vip.
async fn shop(server: &TestServer) -> Client {
    let mut client = server.client().await;
    let customers = (0..10)
        .map(|i| Customer {
            customer_id: format!("c{i}"),
            opted_in: Some(i % 2 == 0),
            tags: if i < 3 { vec!["vip".into()] } else { vec![] },
            ..Customer::default()
        })
        .collect();
    let request = UpsertCustomersRequest {
        tenant: "shop".into(),
        customers,
    };
    client.upsert_customers(request).await.unwrap();
    client
}

#[tokio::test]
async fn an_update_needs_the_current_version_and_changes_only_the_masked_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = shop(&server).await;
    let created = create(&mut client, "a", "opted_in").await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(count(&mut client, "a").await, 5); // c0 c2 c4 c6 c8

    let vip = Segment {
        rule_text: "tag = \"VIP\"".into(),
        ..Segment::default()
    };
    let updated = update(&mut client, "a", 1, vip.clone(), &["rule_text"])
        .await
        .unwrap();
    assert_eq!(
        (updated.version, updated.rule_text.as_str()),
        (2, "tag = \"vip\"")
    );
    assert_eq!(updated.title, "a", "the title was not in the mask");
    assert_eq!(count(&mut client, "a").await, 3); // c0 c1 c2
    // Of those, the opted-in (even) ones can be sent to: c0 and c2.
    let request = CountAudienceRequest {
        tenant: "shop".into(),
        audience: Some(count_audience_request::Audience::SegmentId("a".into())),
        as_of: None,
        ..Default::default()
    };
    let counted = client.count_audience(request).await.unwrap().into_inner();
    assert_eq!((counted.count, counted.sendable_count), (3, 2));

    // A second editor who read version 1 is refused, and nothing changes.
    let status = update(&mut client, "a", 1, vip, &["rule_text"])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{}", status.message());
    let retitled = Segment {
        title: "VIPs".into(),
        ..Segment::default()
    };
    let updated = update(&mut client, "a", 2, retitled, &["title"])
        .await
        .unwrap();
    assert_eq!((updated.version, updated.title.as_str()), (3, "VIPs"));
    assert_eq!(updated.rule_text, "tag = \"vip\"");
    server.stop().await;
}

#[tokio::test]
async fn a_reference_cycle_is_refused_with_its_path_and_a_diamond_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = shop(&server).await;
    create(&mut client, "a", "opted_in").await.unwrap();
    create(&mut client, "b", "segment = \"a\" AND tag = \"vip\"")
        .await
        .unwrap();
    create(&mut client, "c", "segment = \"b\"").await.unwrap();
    // A diamond: d reaches a twice, through b and directly.
    create(&mut client, "d", "segment = \"b\" OR segment = \"a\"")
        .await
        .unwrap();
    assert_eq!(count(&mut client, "d").await, 5); // b ⊆ a; a = the 5 opted in

    let closing = Segment {
        rule_text: "segment = \"c\"".into(),
        ..Segment::default()
    };
    let status = update(&mut client, "a", 1, closing, &["rule_text"])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("a → c → b → a"),
        "{}",
        status.message()
    );
    assert_eq!(count(&mut client, "c").await, 2); // c0 c2: opted in and vip
    server.stop().await;
}

#[tokio::test]
async fn archiving_is_refused_while_referred_to_and_restoring_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = shop(&server).await;
    create(&mut client, "a", "opted_in").await.unwrap();
    create(&mut client, "b", "segment = \"a\"").await.unwrap();

    let status = archive(&mut client, "a").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("`b`"), "{}", status.message());

    let b = archive(&mut client, "b").await.unwrap();
    assert!(b.archived);
    assert_eq!(b.version, 2);
    let a = archive(&mut client, "a").await.unwrap();
    assert!(a.archived);
    // Archived segments still count, but no new rule may refer to them.
    assert_eq!(count(&mut client, "a").await, 5);
    let status = create(&mut client, "e", "segment = \"a\"")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // b cannot come back while a, which it refers to, is archived.
    let status = unarchive(&mut client, "b").await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );

    let listed = |show_archived| ListSegmentsRequest {
        tenant: "shop".into(),
        show_archived,
        ..ListSegmentsRequest::default()
    };
    let live = client
        .list_segments(listed(false))
        .await
        .unwrap()
        .into_inner()
        .segments;
    assert!(live.is_empty());
    let all = client
        .list_segments(listed(true))
        .await
        .unwrap()
        .into_inner()
        .segments;
    assert_eq!(all.len(), 2);

    unarchive(&mut client, "a").await.unwrap();
    let b = unarchive(&mut client, "b").await.unwrap();
    assert!(!b.archived);
    assert_eq!(b.version, 3);
    let live = client
        .list_segments(listed(false))
        .await
        .unwrap()
        .into_inner()
        .segments;
    assert_eq!(live.len(), 2);

    // The lifecycle survives a restart.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let status = archive(&mut client, "a").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(count(&mut client, "b").await, 5);
    server.stop().await;
}
