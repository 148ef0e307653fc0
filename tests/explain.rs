//! `ExplainMembership` through the real API: what decided, and the facts
//! behind each leaf, against values written by hand from the data the test
//! sends. (`tests/model.rs` checks every clause's truth value against the
//! naive model over random data.)

mod common;

use common::TestServer;
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    CreateSegmentRequest, Customer, Event, ExplainMembershipRequest, Membership,
    RecordEventsRequest, Segment, UpsertCustomersRequest, event, membership::Decision,
};
use tonic::Code;
use tonic::transport::Channel;

type Client = SegmentServiceClient<Channel>;

fn ts(text: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

async fn setup(client: &mut Client) {
    let customers = vec![
        Customer {
            customer_id: "ann".into(),
            state: Some("CA".into()),
            tags: vec!["vip".into()],
            opted_in: Some(true),
            ..Customer::default()
        },
        Customer {
            customer_id: "bob".into(),
            state: Some("NY".into()),
            opted_in: Some(false),
            ..Customer::default()
        },
    ];
    client
        .upsert_customers(UpsertCustomersRequest {
            tenant: "shop".into(),
            customers,
        })
        .await
        .unwrap();
    let order = |id: &str, customer: &str, time: &str, cents: i64| Event {
        event_id: id.into(),
        customer_id: customer.into(),
        time: Some(ts(time)),
        kind: Some(event::Kind::Order(event::Order { value_cents: cents })),
    };
    let events = vec![
        order("o1", "ann", "1998-03-02T15:00:00Z", 2_500),
        order("o2", "ann", "1998-06-20T09:30:00Z", 7_550),
        order("o3", "bob", "1998-01-10T12:00:00Z", 1_000),
    ];
    client
        .record_events(RecordEventsRequest {
            tenant: "shop".into(),
            events,
        })
        .await
        .unwrap();
    for (id, rule, included, excluded) in [
        (
            "recent",
            "ordered WITHIN 30d AND spent > 50",
            vec![],
            vec![],
        ),
        ("west", "state = \"CA\"", vec!["bob"], vec![]),
        ("west-not-ann", "state = \"CA\"", vec![], vec!["ann"]),
    ] {
        let segment = Segment {
            title: id.into(),
            rule_text: rule.into(),
            included_customer_ids: included.into_iter().map(String::from).collect(),
            excluded_customer_ids: excluded.into_iter().map(String::from).collect(),
            ..Segment::default()
        };
        client
            .create_segment(CreateSegmentRequest {
                tenant: "shop".into(),
                segment_id: id.into(),
                segment: Some(segment),
            })
            .await
            .unwrap();
    }
}

async fn explain(
    client: &mut Client,
    customer: &str,
    segments: &[&str],
    rule_text: &str,
) -> Result<Vec<Membership>, tonic::Status> {
    let request = ExplainMembershipRequest {
        tenant: "shop".into(),
        customer_id: customer.into(),
        segment_ids: segments.iter().map(|s| (*s).to_owned()).collect(),
        rule_text: rule_text.into(),
        as_of: Some(ts("1998-06-30T12:00:00Z")),
    };
    client
        .explain_membership(request)
        .await
        .map(|r| r.into_inner().memberships)
}

/// (path, holds, fact) of every clause.
fn clauses(membership: &Membership) -> Vec<(&str, bool, &str)> {
    membership
        .clauses
        .iter()
        .map(|c| (c.path.as_str(), c.holds, c.fact.as_str()))
        .collect()
}

#[tokio::test]
async fn leaves_carry_the_facts_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    setup(&mut client).await;

    // 30 local days up to 1998-06-30 start on 1998-06-01. Ann ordered on
    // 06-20 and spent 25.00 + 75.50; Bob last ordered on 01-10, spent 10.00.
    let window = "the window runs from 1998-06-01 00:00:00 to 1998-06-30 12:00:00 (UTC)";
    let ann = explain(&mut client, "ann", &["recent"], "").await.unwrap();
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].segment_id, "recent");
    assert!(ann[0].member && ann[0].rule_holds);
    assert_eq!(ann[0].decided_by, Decision::Rule as i32);
    assert_eq!(
        clauses(&ann[0]),
        vec![
            ("", true, ""),
            (
                "0",
                true,
                &*format!("order on 1998-06-20, inside the window; {window}")
            ),
            ("1", true, "spent 100.50 over 2 orders"),
        ]
    );

    let bob = explain(&mut client, "bob", &["recent"], "").await.unwrap();
    assert!(!bob[0].member && !bob[0].rule_holds);
    assert_eq!(
        clauses(&bob[0]),
        vec![
            ("", false, ""),
            (
                "0",
                false,
                &*format!("last order on 1998-01-10, outside the window; {window}")
            ),
            ("1", false, "spent 10.00 over 1 orders"),
        ]
    );

    // An inline rule comes last, with no segment id; NOT has no fact of its
    // own. Bob's consent was set by the upsert, today (UTC, the tenant's zone).
    let today = chrono::Utc::now().date_naive();
    let rule = "opted_in AND NOT tag = \"vip\" AND NOT messaged";
    let bob = explain(&mut client, "bob", &[], rule).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].segment_id, "");
    assert_eq!(
        clauses(&bob[0]),
        vec![
            ("", false, ""),
            ("0", false, &*format!("not opted in since {today}")),
            ("1", true, ""),
            ("1.0", false, "no tags"),
            ("2", true, ""),
            ("2.0", false, "no message ever"),
        ]
    );
}

#[tokio::test]
async fn include_and_exclude_lists_decide_over_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    setup(&mut client).await;

    let segments = ["west", "west-not-ann"];
    // (customer, segment) → (member, rule holds, decided by), by hand:
    // Ann is in CA; Bob is in NY but on `west`'s include list; Ann is on
    // `west-not-ann`'s exclude list.
    let expected = [
        (
            "ann",
            [
                (true, true, Decision::Rule),
                (false, true, Decision::Excluded),
            ],
        ),
        (
            "bob",
            [
                (true, false, Decision::Included),
                (false, false, Decision::Rule),
            ],
        ),
    ];
    for (customer, wanted) in expected {
        let memberships = explain(&mut client, customer, &segments, "").await.unwrap();
        let got: Vec<(bool, bool, i32)> = memberships
            .iter()
            .map(|m| (m.member, m.rule_holds, m.decided_by))
            .collect();
        let wanted: Vec<(bool, bool, i32)> = wanted
            .iter()
            .map(|(member, holds, decision)| (*member, *holds, *decision as i32))
            .collect();
        assert_eq!(got, wanted, "{customer}");
        let ids: Vec<&str> = memberships.iter().map(|m| m.segment_id.as_str()).collect();
        assert_eq!(ids, segments);
    }
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    setup(&mut client).await;

    let cases: [(&str, &[&str], &str, Code, &str); 5] = [
        (
            "nobody",
            &["recent"],
            "",
            Code::NotFound,
            "customer `nobody`",
        ),
        ("ann", &["missing"], "", Code::NotFound, "segment `missing`"),
        ("ann", &[], "", Code::InvalidArgument, "segment_ids"),
        ("ann", &[""], "", Code::InvalidArgument, "segment_ids[0]"),
        (
            "ann",
            &[],
            "ordered WITHIN",
            Code::InvalidArgument,
            "rule_text",
        ),
    ];
    for (customer, segments, rule, code, mentions) in cases {
        let status = explain(&mut client, customer, segments, rule)
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{customer} {segments:?} {rule}");
        assert!(
            status.message().contains(mentions),
            "`{}` should mention `{mentions}`",
            status.message()
        );
    }
    let many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let status = explain(&mut client, "ann", &many, "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("segment_ids"));
}
