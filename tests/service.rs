//! The service as a client sees it: health, reflection, errors that name
//! the field, exactly-once events, deletes, saved segments and page tokens.

mod common;

use common::{TestServer, ts};
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    self, CountAudienceRequest, CreateSegmentRequest, Customer, DeleteCustomersRequest, Event,
    GetSegmentRequest, ListSegmentsRequest, RecordEventsRequest, ResolveSegmentRequest, Segment,
    UpsertCustomersRequest, count_audience_request, event, resolve_segment_request,
};
use tonic::Code;
use tonic::transport::Channel;

fn order(event_id: &str, customer_id: &str, time: &str, cents: i64) -> Event {
    Event {
        event_id: event_id.into(),
        customer_id: customer_id.into(),
        time: Some(ts(time)),
        kind: Some(event::Kind::Order(event::Order { value_cents: cents })),
    }
}

async fn record(
    client: &mut SegmentServiceClient<Channel>,
    tenant: &str,
    events: Vec<Event>,
) -> Result<proto::RecordEventsResponse, tonic::Status> {
    let request = RecordEventsRequest {
        tenant: tenant.into(),
        events,
    };
    client.record_events(request).await.map(|r| r.into_inner())
}

async fn count(
    client: &mut SegmentServiceClient<Channel>,
    tenant: &str,
    rule: &str,
) -> Result<u64, tonic::Status> {
    let request = CountAudienceRequest {
        tenant: tenant.into(),
        audience: Some(count_audience_request::Audience::RuleText(rule.into())),
        as_of: None,
        ..Default::default()
    };
    client
        .count_audience(request)
        .await
        .map(|r| r.into_inner().count)
}

async fn upsert(
    client: &mut SegmentServiceClient<Channel>,
    tenant: &str,
    customers: Vec<Customer>,
) -> Result<proto::UpsertCustomersResponse, tonic::Status> {
    let request = UpsertCustomersRequest {
        tenant: tenant.into(),
        customers,
    };
    client
        .upsert_customers(request)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn health_answers_for_the_empty_name_and_the_service() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "segmentd.v1.SegmentService"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(request).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "service `{service}`");
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_every_service_in_v1alpha_and_v1() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "segmentd.v1.SegmentService",
    ];

    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("expected a service list");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        for name in expected {
            assert!(
                names.iter().any(|n| n == name),
                "v1alpha lacks {name}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.Health".into(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.next().await.unwrap().unwrap();
        assert!(
            matches!(
                response.message_response,
                Some(MessageResponse::FileDescriptorResponse(_))
            ),
            "v1 cannot describe the health service"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_input_names_the_field_and_a_bad_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    // Unknown tenant.
    let status = count(&mut client, "nobody", "opted_in").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    record(
        &mut client,
        "shop",
        vec![order("e1", "c1", "2026-01-05T10:00:00Z", 1000)],
    )
    .await
    .unwrap();

    // A rule that does not parse: line and column of the bad token, the
    // second `>` (the first is a comparison, which wants a number after it).
    let status = count(&mut client, "shop", "opted_in AND\n  spent >> 5")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("rule_text: line 2, column 10"),
        "{}",
        status.message()
    );

    // An unknown state in an upsert names the item and field.
    let bad = Customer {
        customer_id: "c2".into(),
        state: Some("Calfornia".into()),
        ..Customer::default()
    };
    let good = Customer {
        customer_id: "c3".into(),
        ..Customer::default()
    };
    let status = upsert(&mut client, "shop", vec![good, bad])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("customers[1].state"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("Calfornia"),
        "{}",
        status.message()
    );

    // One event without a time refuses the whole batch.
    let mut timeless = order("e3", "c4", "2026-01-06T10:00:00Z", 500);
    timeless.time = None;
    let status = record(
        &mut client,
        "shop",
        vec![order("e2", "c1", "2026-01-06T10:00:00Z", 500), timeless],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("events[1].time"),
        "{}",
        status.message()
    );
    assert_eq!(
        count(&mut client, "shop", "order_count >= 0")
            .await
            .unwrap(),
        1
    );
    assert_eq!(count(&mut client, "shop", "spent = 10").await.unwrap(), 1);

    // Negative money and bad tenant names.
    let status = record(
        &mut client,
        "shop",
        vec![order("e4", "c1", "2026-01-06T10:00:00Z", -1)],
    )
    .await
    .unwrap_err();
    assert!(
        status.message().contains("events[0].order.value_cents"),
        "{}",
        status.message()
    );
    let status = count(&mut client, "shop/../x", "opted_in")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("tenant"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_event_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let batch = vec![
        order("o1", "ann", "2026-02-01T09:00:00Z", 6000),
        order("o2", "ann", "2026-02-02T09:00:00Z", 4000),
    ];
    let first = record(&mut client, "shop", batch.clone()).await.unwrap();
    assert_eq!((first.recorded_count, first.duplicate_count), (2, 0));
    let again = record(&mut client, "shop", batch).await.unwrap();
    assert_eq!((again.recorded_count, again.duplicate_count), (0, 2));

    // 60.00 + 40.00 = 100.00 exactly once, and two orders.
    assert_eq!(count(&mut client, "shop", "spent = 100").await.unwrap(), 1);
    assert_eq!(
        count(&mut client, "shop", "order_count = 2").await.unwrap(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn deleted_customers_are_in_no_audience_and_come_back_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let customers = ["a", "b", "c"]
        .iter()
        .map(|id| Customer {
            customer_id: (*id).into(),
            opted_in: Some(true),
            tags: vec!["VIP ".into()],
            ..Customer::default()
        })
        .collect();
    upsert(&mut client, "shop", customers).await.unwrap();
    record(
        &mut client,
        "shop",
        vec![order("o1", "b", "2026-03-01T00:00:00Z", 100)],
    )
    .await
    .unwrap();

    let request = DeleteCustomersRequest {
        tenant: "shop".into(),
        customer_ids: vec!["b".into(), "never-existed".into()],
    };
    let deleted = client.delete_customers(request).await.unwrap().into_inner();
    assert_eq!(deleted.deleted_count, 1);

    assert_eq!(
        count(&mut client, "shop", "tag = \"vip\"").await.unwrap(),
        2
    );
    assert_eq!(count(&mut client, "shop", "NOT ordered").await.unwrap(), 2);
    assert_eq!(count(&mut client, "shop", "NOT opted_in").await.unwrap(), 0);
    assert_eq!(count(&mut client, "shop", "ordered").await.unwrap(), 0);

    // A replay of b's old order is still a duplicate and does not bring b back.
    let replay = record(
        &mut client,
        "shop",
        vec![order("o1", "b", "2026-03-01T00:00:00Z", 100)],
    )
    .await
    .unwrap();
    assert_eq!(replay.duplicate_count, 1);
    assert_eq!(
        count(&mut client, "shop", "order_count >= 0")
            .await
            .unwrap(),
        2
    );

    // b comes back with a new event and none of its old history.
    record(
        &mut client,
        "shop",
        vec![order("o2", "b", "2026-03-02T00:00:00Z", 700)],
    )
    .await
    .unwrap();
    assert_eq!(count(&mut client, "shop", "spent = 7").await.unwrap(), 1);
    assert_eq!(
        count(&mut client, "shop", "tag = \"vip\"").await.unwrap(),
        2
    );
    assert_eq!(
        count(&mut client, "shop", "customer IN (\"b\") AND opted_in")
            .await
            .unwrap(),
        0
    );

    // The same holds after a restart.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    assert_eq!(
        count(&mut client, "shop", "order_count >= 0")
            .await
            .unwrap(),
        3
    );
    assert_eq!(count(&mut client, "shop", "spent = 7").await.unwrap(), 1);
    assert_eq!(
        count(&mut client, "shop", "tag = \"vip\"").await.unwrap(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn saved_segments_count_and_resolve_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let customers = (0..10)
        .map(|i| Customer {
            customer_id: format!("c{i}"),
            state: Some(if i % 2 == 0 {
                "ca".into()
            } else {
                "New York".into()
            }),
            ..Customer::default()
        })
        .collect();
    upsert(&mut client, "shop", customers).await.unwrap();

    let segment = Segment {
        title: "Californians".into(),
        rule_text: "state = \"California\"".into(),
        included_customer_ids: vec!["c1".into()],
        excluded_customer_ids: vec!["c0".into()],
        ..Segment::default()
    };
    let request = CreateSegmentRequest {
        tenant: "shop".into(),
        segment_id: "west".into(),
        segment: Some(segment.clone()),
    };
    let created = client
        .create_segment(request.clone())
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(created.rule_text, "state = \"CA\"");
    assert_eq!(created.version, 1);
    let status = client.create_segment(request).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // Evens are in CA (c0, c2, c4, c6, c8); plus c1, minus c0: 5 members.
    let request = CountAudienceRequest {
        tenant: "shop".into(),
        audience: Some(count_audience_request::Audience::SegmentId("west".into())),
        as_of: None,
        ..Default::default()
    };
    assert_eq!(
        client
            .count_audience(request)
            .await
            .unwrap()
            .into_inner()
            .count,
        5
    );
    let request = ResolveSegmentRequest {
        tenant: "shop".into(),
        audience: Some(resolve_segment_request::Audience::SegmentId("west".into())),
        page_size: 10,
        ..ResolveSegmentRequest::default()
    };
    let page = client.resolve_segment(request).await.unwrap().into_inner();
    assert_eq!(page.customer_ids, vec!["c1", "c2", "c4", "c6", "c8"]);

    // A segment of that segment, and one naming a segment that does not exist.
    let nested = Segment {
        title: "West, not c2".into(),
        rule_text: "segment = \"west\" AND NOT customer IN (\"c2\")".into(),
        ..Segment::default()
    };
    let request = CreateSegmentRequest {
        tenant: "shop".into(),
        segment_id: "west-but-c2".into(),
        segment: Some(nested),
    };
    client.create_segment(request).await.unwrap();
    assert_eq!(
        count(&mut client, "shop", "segment = \"west-but-c2\"")
            .await
            .unwrap(),
        4
    );
    let dangling = Segment {
        title: "broken".into(),
        rule_text: "segment = \"nope\"".into(),
        ..Segment::default()
    };
    let request = CreateSegmentRequest {
        tenant: "shop".into(),
        segment_id: "broken".into(),
        segment: Some(dangling),
    };
    assert_eq!(
        client.create_segment(request).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let request = GetSegmentRequest {
        tenant: "shop".into(),
        segment_id: "west".into(),
    };
    let got = client
        .get_segment(request)
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(got.title, "Californians");
    assert_eq!(got.excluded_customer_ids, vec!["c0"]);

    // Listing a page at a time yields both, in id order.
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListSegmentsRequest {
            tenant: "shop".into(),
            page_size: 1,
            page_token,
            show_archived: false,
            ..Default::default()
        };
        let page = client.list_segments(request).await.unwrap().into_inner();
        listed.extend(page.segments.into_iter().map(|s| s.segment_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, vec!["west", "west-but-c2"]);
    server.stop().await;
}

#[tokio::test]
async fn a_page_token_works_only_for_its_own_audience() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let customers = (0..5)
        .map(|i| Customer {
            customer_id: format!("c{i}"),
            opted_in: Some(true),
            ..Customer::default()
        })
        .collect();
    upsert(&mut client, "shop", customers).await.unwrap();
    let page = |rule: &str, token: String| ResolveSegmentRequest {
        tenant: "shop".into(),
        audience: Some(resolve_segment_request::Audience::RuleText(rule.into())),
        page_size: 2,
        page_token: token,
        ..ResolveSegmentRequest::default()
    };
    let first = client
        .resolve_segment(page("opted_in", String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.customer_ids, vec!["c0", "c1"]);
    assert!(!first.next_page_token.is_empty());

    let status = client
        .resolve_segment(page("NOT opted_in", first.next_page_token.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );

    // The same rule written differently is the same audience.
    let second = client
        .resolve_segment(page("  OPTED_IN ", first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.customer_ids, vec!["c2", "c3"]);
    server.stop().await;
}

#[tokio::test]
async fn window_edges_inside_a_day_are_exact_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    record(
        &mut client,
        "shop",
        vec![
            order("early", "early", "2026-05-10T03:00:00Z", 100),
            order("noon", "noon", "2026-05-10T12:00:00Z", 100),
            order("late", "late", "2026-05-10T20:00:00Z", 100),
            order("next", "next", "2026-05-11T01:00:00Z", 100),
        ],
    )
    .await
    .unwrap();
    let at = |rule: &str, as_of: &str| CountAudienceRequest {
        tenant: "shop".into(),
        audience: Some(count_audience_request::Audience::RuleText(rule.into())),
        as_of: Some(ts(as_of)),
        ..Default::default()
    };
    let cases = [
        // (rule, as_of, customers counted by hand from the four orders above)
        ("ordered WITHIN 2h", "2026-05-10T13:00:00Z", 1), // noon
        ("ordered WITHIN 1h", "2026-05-10T13:00:00Z", 0), // noon is exactly 1h back: excluded
        ("ordered WITHIN 1d", "2026-05-10T12:00:00Z", 2), // early, noon (the instant is included)
        ("ordered WITHIN 1d", "2026-05-10T11:59:59Z", 1), // early
        ("ordered SINCE 2026-05-10", "2026-05-10T19:59:59Z", 2), // early, noon
        ("ordered SINCE 2026-05-10", "2026-05-11T01:00:00Z", 4),
        ("ordered WITHIN 22h", "2026-05-11T01:00:00Z", 3), // noon, late, next
        ("ordered WITHIN 13h", "2026-05-11T01:00:00Z", 2), // late, next
        (
            "ordered BETWEEN 2026-05-10 AND 2026-05-10",
            "2026-05-10T00:00:00Z",
            3,
        ),
        ("ordered BEFORE 2026-05-11", "2026-05-10T00:00:00Z", 3),
        ("NOT ordered WITHIN 2d", "2026-05-12T00:00:00Z", 3), // only next is in 05-11..05-12
    ];
    for (rule, as_of, expected) in cases {
        let got = client
            .count_audience(at(rule, as_of))
            .await
            .unwrap()
            .into_inner()
            .count;
        assert_eq!(got, expected, "`{rule}` at {as_of}");
    }
    server.stop().await;
}

#[tokio::test]
async fn segment_references_nest_to_the_documented_depth_and_share_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let customers = (0..4)
        .map(|i| Customer {
            customer_id: format!("c{i}"),
            opted_in: Some(i % 2 == 0),
            ..Customer::default()
        })
        .collect();
    upsert(&mut client, "shop", customers).await.unwrap();
    let create = |id: String, rule_text: String| CreateSegmentRequest {
        tenant: "shop".into(),
        segment_id: id.clone(),
        segment: Some(Segment {
            title: id,
            rule_text,
            ..Segment::default()
        }),
    };

    // A chain l0 <- l1 <- ... <- l15 is 16 segments: the most that may nest.
    client
        .create_segment(create("l0".into(), "opted_in".into()))
        .await
        .unwrap();
    for k in 1..16 {
        let rule = format!("segment = \"l{}\"", k - 1);
        client
            .create_segment(create(format!("l{k}"), rule))
            .await
            .unwrap();
    }
    let status = client
        .create_segment(create("l16".into(), "segment = \"l15\"".into()))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    // c0 and c2 are opted in, at every level of the chain.
    assert_eq!(
        count(&mut client, "shop", "segment = \"l15\"")
            .await
            .unwrap(),
        2
    );

    // Three levels of 100 references each: counted once per segment, not 10^6 times.
    let wide = |target: &str| vec![format!("segment = \"{target}\""); 100].join(" OR ");
    client
        .create_segment(create("w1".into(), wide("l0")))
        .await
        .unwrap();
    client
        .create_segment(create("w2".into(), wide("w1")))
        .await
        .unwrap();
    client
        .create_segment(create("w3".into(), format!("NOT ({})", wide("w2"))))
        .await
        .unwrap();
    assert_eq!(
        count(&mut client, "shop", "segment = \"w3\"")
            .await
            .unwrap(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_structured_in_list_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    upsert(
        &mut client,
        "shop",
        vec![Customer {
            customer_id: "c".into(),
            ..Customer::default()
        }],
    )
    .await
    .unwrap();
    let values: Vec<String> = (0..10_001).map(|i| format!("t{i}")).collect();
    let rule = proto::Rule {
        node: Some(proto::rule::Node::Predicate(proto::Predicate {
            qualifier: Some(proto::predicate::Qualifier::Set(proto::SetCondition {
                field: proto::SetField::Tag as i32,
                values,
            })),
        })),
    };
    let request = CountAudienceRequest {
        tenant: "shop".into(),
        audience: Some(count_audience_request::Audience::Rule(rule)),
        as_of: None,
        ..Default::default()
    };
    let status = client.count_audience(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("rule.predicate.set.values"),
        "{}",
        status.message()
    );
    server.stop().await;
}
