//! The audience API through the real server: exports, snapshots, overlaps,
//! differences, a customer's segments and segment counts. Every expected
//! value comes from `Model`, a plain record of what the test wrote, with
//! each rule written twice: as text for segmentd and as a Rust predicate.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use common::{TestServer, ts};
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{
    ArchiveSegmentRequest, AudienceSpec, CountAudienceRequest, CountAudienceResponse,
    CountOverlapRequest, CountOverlapResponse, CreateSegmentRequest, CreateSnapshotRequest,
    Customer, DeleteCustomersRequest, DeleteSnapshotRequest, DiffAudiencesRequest,
    DiffAudiencesResponse, Event, ExportAudienceRequest, ExportAudienceResponse, GetSegmentRequest,
    GetSnapshotRequest, ListCustomerSegmentsRequest, ListSegmentsRequest, ListSnapshotsRequest,
    RecordEventsRequest, ResolveSegmentRequest, Segment, Snapshot, UpdateSegmentRequest,
    UpsertCustomersRequest, audience_spec, count_audience_request, create_snapshot_request, event,
    export_audience_request, resolve_segment_request,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = SegmentServiceClient<Channel>;

/// The most items of one write batch, and the most ids of one export message.
const BATCH: usize = 10_000;

// ------------------------------------------------------------------ the model

/// The attributes the test gives a customer; every upsert sends all of them.
#[derive(Clone, Debug, Default)]
struct Attributes {
    /// Lower case, as segmentd normalises tags.
    tags: Vec<&'static str>,
    /// A two-letter code.
    state: Option<&'static str>,
    opted_in: bool,
}

/// What the test knows of one customer.
#[derive(Clone, Debug)]
struct Person {
    id: String,
    attributes: Attributes,
    orders: u32,
    live: bool,
}

impl Person {
    fn tagged(&self, tag: &str) -> bool {
        self.attributes.tags.contains(&tag)
    }

    fn lives_in(&self, state: &str) -> bool {
        self.attributes.state == Some(state)
    }

    fn opted_in(&self) -> bool {
        self.attributes.opted_in
    }

    fn ordered(&self) -> bool {
        self.orders > 0
    }
}

/// A rule twice: as text for segmentd and as a predicate for the model.
#[derive(Clone, Copy)]
struct Rule {
    text: &'static str,
    holds: fn(&Person) -> bool,
}

const GOLD: Rule = Rule {
    text: r#"tag = "gold""#,
    holds: |person| person.tagged("gold"),
};
const CALIFORNIA: Rule = Rule {
    text: r#"state = "CA""#,
    holds: |person| person.lives_in("CA"),
};
const NEW_YORK: Rule = Rule {
    text: r#"state = "NY""#,
    holds: |person| person.lives_in("NY"),
};
const OPTED_IN: Rule = Rule {
    text: "opted_in",
    holds: Person::opted_in,
};

/// A saved segment as the model sees it.
struct SavedSegment {
    rule: Rule,
    included: Vec<String>,
    excluded: Vec<String>,
    archived: bool,
}

/// A snapshot as the model sees it: the positions in `Model::people` of
/// the customers it froze, so that one deleted and brought back since is
/// another customer.
type Frozen = Vec<usize>;

#[derive(Default)]
struct Model {
    /// Every customer, in the order it reached segmentd; one deleted and
    /// brought back comes again at the end, starting fresh.
    people: Vec<Person>,
    /// Customer id to its latest place in `people`.
    position: HashMap<String, usize>,
    segments: BTreeMap<String, SavedSegment>,
    events: usize,
}

impl Model {
    /// Records a customer's attributes; returns the upsert that sends them
    /// all, so that segmentd holds exactly what the model does.
    fn upsert(&mut self, id: &str, attributes: Attributes) -> Customer {
        let customer = Customer {
            customer_id: id.to_owned(),
            tags: attributes
                .tags
                .iter()
                .map(|tag| (*tag).to_owned())
                .collect(),
            replace_tags: true,
            state: Some(attributes.state.unwrap_or_default().to_owned()),
            opted_in: Some(attributes.opted_in),
            ..Customer::default()
        };
        if self.is_live(id) {
            self.people[self.position[id]].attributes = attributes;
        } else {
            self.position.insert(id.to_owned(), self.people.len());
            self.people.push(Person {
                id: id.to_owned(),
                attributes,
                orders: 0,
                live: true,
            });
        }
        customer
    }

    /// Records an order of a live customer; returns the event that says so.
    fn order(&mut self, id: &str) -> Event {
        let person = self.person_mut(id);
        person.orders += 1;
        self.events += 1;
        Event {
            event_id: format!("order-{}", self.events),
            customer_id: id.to_owned(),
            time: Some(ts("2026-01-05T10:00:00Z")),
            kind: Some(event::Kind::Order(event::Order { value_cents: 1_000 })),
        }
    }

    fn delete(&mut self, id: &str) {
        self.person_mut(id).live = false;
    }

    fn person_mut(&mut self, id: &str) -> &mut Person {
        let person = &mut self.people[self.position[id]];
        assert!(person.live, "`{id}` is not a live customer");
        person
    }

    fn is_live(&self, id: &str) -> bool {
        self.position
            .get(id)
            .is_some_and(|&at| self.people[at].live)
    }

    /// Live customers for whom `holds` is true, in the order they came.
    fn members(&self, holds: impl Fn(&Person) -> bool) -> Vec<String> {
        self.people
            .iter()
            .filter(|person| person.live && holds(person))
            .map(|person| person.id.clone())
            .collect()
    }

    fn rule_members(&self, rule: Rule) -> Vec<String> {
        self.members(rule.holds)
    }

    /// `(rule ∪ included) − excluded`, live customers only.
    fn segment_members(&self, segment_id: &str) -> Vec<String> {
        let segment = &self.segments[segment_id];
        self.members(|person| {
            ((segment.rule.holds)(person) || segment.included.contains(&person.id))
                && !segment.excluded.contains(&person.id)
        })
    }

    /// The customers `members` name now, as a snapshot keeps them.
    fn freeze(&self, members: &[String]) -> Frozen {
        members.iter().map(|id| self.position[id]).collect()
    }

    /// Those of a snapshot still live, in the order they came.
    fn still_live(&self, frozen: &[usize]) -> Vec<String> {
        frozen
            .iter()
            .map(|&at| &self.people[at])
            .filter(|person| person.live)
            .map(|person| person.id.clone())
            .collect()
    }

    /// How many of the live customers `members` are opted in now.
    fn sendable(&self, members: &[String]) -> u64 {
        members
            .iter()
            .filter(|id| self.people[self.position[id.as_str()]].opted_in())
            .count() as u64
    }
}

/// A customer id for the i-th customer. The letter in front makes the ids'
/// sorted order differ from the order they were written in.
fn customer_id(i: usize) -> String {
    format!("{}{i}", ["m", "b", "x", "e", "q"][i % 5])
}

fn ids(indices: impl IntoIterator<Item = usize>) -> Vec<String> {
    indices.into_iter().map(customer_id).collect()
}

// ------------------------------------------------------------- the audiences

/// An audience as a request names it.
#[derive(Clone, Copy, Debug)]
enum Audience<'a> {
    Rule(&'a str),
    Segment(&'a str),
    Snapshot(&'a str),
}

impl Audience<'_> {
    fn for_count(self) -> count_audience_request::Audience {
        use count_audience_request::Audience as Field;
        match self {
            Audience::Rule(text) => Field::RuleText(text.into()),
            Audience::Segment(id) => Field::SegmentId(id.into()),
            Audience::Snapshot(id) => Field::SnapshotId(id.into()),
        }
    }

    fn for_resolve(self) -> resolve_segment_request::Audience {
        use resolve_segment_request::Audience as Field;
        match self {
            Audience::Rule(text) => Field::RuleText(text.into()),
            Audience::Segment(id) => Field::SegmentId(id.into()),
            Audience::Snapshot(id) => Field::SnapshotId(id.into()),
        }
    }

    fn for_export(self) -> export_audience_request::Audience {
        use export_audience_request::Audience as Field;
        match self {
            Audience::Rule(text) => Field::RuleText(text.into()),
            Audience::Segment(id) => Field::SegmentId(id.into()),
            Audience::Snapshot(id) => Field::SnapshotId(id.into()),
        }
    }

    fn for_snapshot(self) -> create_snapshot_request::Audience {
        use create_snapshot_request::Audience as Field;
        match self {
            Audience::Rule(text) => Field::RuleText(text.into()),
            Audience::Segment(id) => Field::SegmentId(id.into()),
            Audience::Snapshot(_) => panic!("a snapshot is not taken of a snapshot"),
        }
    }

    fn spec(self) -> AudienceSpec {
        use audience_spec::Audience as Field;
        let audience = match self {
            Audience::Rule(text) => Field::RuleText(text.into()),
            Audience::Segment(id) => Field::SegmentId(id.into()),
            Audience::Snapshot(id) => Field::SnapshotId(id.into()),
        };
        AudienceSpec {
            audience: Some(audience),
        }
    }
}

// --------------------------------------------------------------- the client

/// One tenant of a running server, and the model of what was written to it.
struct Shop {
    client: Client,
    tenant: String,
    model: Model,
}

impl Shop {
    async fn new(server: &TestServer, tenant: &str) -> Shop {
        Shop {
            client: server.client().await,
            tenant: tenant.to_owned(),
            model: Model::default(),
        }
    }

    /// Upserts customers in batches of at most `BATCH`, in the order given.
    async fn upsert(&mut self, people: impl IntoIterator<Item = (String, Attributes)>) {
        let mut people = people.into_iter().peekable();
        while people.peek().is_some() {
            let mut created = 0;
            let mut customers = Vec::with_capacity(BATCH);
            for (id, attributes) in people.by_ref().take(BATCH) {
                created += u32::from(!self.model.is_live(&id));
                customers.push(self.model.upsert(&id, attributes));
            }
            let updated = customers.len() as u32 - created;
            let request = UpsertCustomersRequest {
                tenant: self.tenant.clone(),
                customers,
            };
            let response = self.client.upsert_customers(request).await.unwrap();
            let response = response.into_inner();
            assert_eq!(
                (response.created_count, response.updated_count),
                (created, updated)
            );
        }
    }

    async fn order(&mut self, customer_ids: &[String]) {
        let events = customer_ids.iter().map(|id| self.model.order(id)).collect();
        let request = RecordEventsRequest {
            tenant: self.tenant.clone(),
            events,
        };
        let recorded = self.client.record_events(request).await.unwrap();
        assert_eq!(
            recorded.into_inner().recorded_count as usize,
            customer_ids.len()
        );
    }

    async fn delete(&mut self, customer_ids: &[String]) {
        let live = customer_ids
            .iter()
            .filter(|id| self.model.is_live(id))
            .count();
        for id in customer_ids {
            if self.model.is_live(id) {
                self.model.delete(id);
            }
        }
        let request = DeleteCustomersRequest {
            tenant: self.tenant.clone(),
            customer_ids: customer_ids.to_vec(),
        };
        let deleted = self.client.delete_customers(request).await.unwrap();
        assert_eq!(deleted.into_inner().deleted_count as usize, live);
    }

    async fn create_segment(
        &mut self,
        id: &str,
        rule: Rule,
        included: &[String],
        excluded: &[String],
    ) {
        let segment = Segment {
            title: id.to_owned(),
            rule_text: rule.text.to_owned(),
            included_customer_ids: included.to_vec(),
            excluded_customer_ids: excluded.to_vec(),
            ..Segment::default()
        };
        let request = CreateSegmentRequest {
            tenant: self.tenant.clone(),
            segment_id: id.to_owned(),
            segment: Some(segment),
        };
        self.client.create_segment(request).await.unwrap();
        let saved = SavedSegment {
            rule,
            included: included.to_vec(),
            excluded: excluded.to_vec(),
            archived: false,
        };
        self.model.segments.insert(id.to_owned(), saved);
    }

    /// Replaces a segment's rule, at the version just read.
    async fn update_segment_rule(&mut self, id: &str, rule: Rule) {
        let request = GetSegmentRequest {
            tenant: self.tenant.clone(),
            segment_id: id.to_owned(),
        };
        let current = self.client.get_segment(request).await.unwrap();
        let version = current.into_inner().segment.unwrap().version;

        let request = UpdateSegmentRequest {
            tenant: self.tenant.clone(),
            segment_id: id.to_owned(),
            segment: Some(Segment {
                rule_text: rule.text.to_owned(),
                ..Segment::default()
            }),
            version,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rule_text".to_owned()],
            }),
        };
        self.client.update_segment(request).await.unwrap();
        self.model.segments.get_mut(id).unwrap().rule = rule;
    }

    async fn archive(&mut self, id: &str) {
        let request = ArchiveSegmentRequest {
            tenant: self.tenant.clone(),
            segment_id: id.to_owned(),
        };
        self.client.archive_segment(request).await.unwrap();
        self.model.segments.get_mut(id).unwrap().archived = true;
    }

    async fn count(&mut self, audience: Audience<'_>) -> Result<CountAudienceResponse, Status> {
        let request = CountAudienceRequest {
            tenant: self.tenant.clone(),
            audience: Some(audience.for_count()),
            ..CountAudienceRequest::default()
        };
        self.client
            .count_audience(request)
            .await
            .map(|response| response.into_inner())
    }

    /// Every page of an audience; the ids and the total that every page gave.
    async fn resolve_all(
        &mut self,
        audience: Audience<'_>,
        page_size: u32,
    ) -> Result<(Vec<String>, u64), Status> {
        let mut customer_ids = Vec::new();
        let mut totals = BTreeSet::new();
        let mut page_token = String::new();
        loop {
            let request = ResolveSegmentRequest {
                tenant: self.tenant.clone(),
                audience: Some(audience.for_resolve()),
                page_size,
                page_token,
                ..ResolveSegmentRequest::default()
            };
            let page = self.client.resolve_segment(request).await?.into_inner();
            assert!(page.customer_ids.len() <= page_size as usize);
            customer_ids.extend(page.customer_ids);
            totals.insert(page.total_count);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(
            totals.len(),
            1,
            "pages of {audience:?} gave totals {totals:?}"
        );
        Ok((customer_ids, totals.pop_first().unwrap()))
    }

    /// Every message of an export; an error whether it came as the call's
    /// status or in the stream.
    async fn export(
        &mut self,
        audience: Option<Audience<'_>>,
    ) -> Result<Vec<ExportAudienceResponse>, Status> {
        let request = ExportAudienceRequest {
            tenant: self.tenant.clone(),
            audience: audience.map(Audience::for_export),
            as_of: None,
        };
        let mut stream = self.client.export_audience(request).await?.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok(messages)
    }

    async fn create_snapshot(
        &mut self,
        snapshot_id: &str,
        audience: Audience<'_>,
    ) -> Result<Snapshot, Status> {
        let request = CreateSnapshotRequest {
            tenant: self.tenant.clone(),
            snapshot_id: snapshot_id.to_owned(),
            audience: Some(audience.for_snapshot()),
            as_of: None,
            title: format!("broadcast to {audience:?}"),
        };
        let created = self.client.create_snapshot(request).await?;
        Ok(created.into_inner().snapshot.unwrap())
    }

    async fn get_snapshot(&mut self, snapshot_id: &str) -> Result<Snapshot, Status> {
        let request = GetSnapshotRequest {
            tenant: self.tenant.clone(),
            snapshot_id: snapshot_id.to_owned(),
        };
        let got = self.client.get_snapshot(request).await?;
        Ok(got.into_inner().snapshot.unwrap())
    }

    async fn delete_snapshot(&mut self, snapshot_id: &str) -> Result<(), Status> {
        let request = DeleteSnapshotRequest {
            tenant: self.tenant.clone(),
            snapshot_id: snapshot_id.to_owned(),
        };
        self.client.delete_snapshot(request).await.map(drop)
    }

    /// Every snapshot, a page of one at a time.
    async fn list_snapshots(&mut self) -> Vec<Snapshot> {
        let mut snapshots = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListSnapshotsRequest {
                tenant: self.tenant.clone(),
                page_size: 1,
                page_token,
            };
            let page = self
                .client
                .list_snapshots(request)
                .await
                .unwrap()
                .into_inner();
            assert!(
                page.snapshots.len() <= 1,
                "{} on a page of one",
                page.snapshots.len()
            );
            snapshots.extend(page.snapshots);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        snapshots
    }

    /// Every saved segment, `page_size` at a time.
    async fn list_segments(&mut self, show_archived: bool, show_counts: bool) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListSegmentsRequest {
                tenant: self.tenant.clone(),
                page_size: 2,
                page_token,
                show_archived,
                show_counts,
            };
            let page = self
                .client
                .list_segments(request)
                .await
                .unwrap()
                .into_inner();
            segments.extend(page.segments);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        segments
    }

    async fn customer_segments(
        &mut self,
        customer_id: &str,
        show_archived: bool,
    ) -> Result<Vec<String>, Status> {
        let request = ListCustomerSegmentsRequest {
            tenant: self.tenant.clone(),
            customer_id: customer_id.to_owned(),
            as_of: None,
            show_archived,
        };
        let listed = self.client.list_customer_segments(request).await?;
        Ok(listed.into_inner().segment_ids)
    }

    async fn overlap(
        &mut self,
        audiences: &[Audience<'_>],
    ) -> Result<CountOverlapResponse, Status> {
        let request = CountOverlapRequest {
            tenant: self.tenant.clone(),
            audiences: audiences.iter().map(|audience| audience.spec()).collect(),
            as_of: None,
        };
        let overlap = self.client.count_overlap(request).await?;
        Ok(overlap.into_inner())
    }

    async fn diff(
        &mut self,
        before: Audience<'_>,
        after: Audience<'_>,
        sample_size: u32,
    ) -> Result<DiffAudiencesResponse, Status> {
        let request = DiffAudiencesRequest {
            tenant: self.tenant.clone(),
            before: Some(before.spec()),
            after: Some(after.spec()),
            as_of: None,
            sample_size,
        };
        let diff = self.client.diff_audiences(request).await?;
        Ok(diff.into_inner())
    }
}

// --------------------------------------------------------------- assertions

/// The same ids in the same order; on failure, says where they part
/// rather than printing both lists whole.
fn assert_same_ids(got: &[String], expected: &[String], what: &str) {
    if let Some(at) = got.iter().zip(expected).position(|(g, e)| g != e) {
        panic!(
            "{what}: id {at} is `{}`, expected `{}` ({} ids, expected {})",
            got[at],
            expected[at],
            got.len(),
            expected.len()
        );
    }
    assert_eq!(got.len(), expected.len(), "{what}: number of ids");
}

/// An export of exactly `expected`, in order, in messages of at most
/// `BATCH` ids, each giving the total.
fn assert_export(messages: &[ExportAudienceResponse], expected: &[String], what: &str) {
    for (at, message) in messages.iter().enumerate() {
        let size = message.customer_ids.len();
        assert!(size <= BATCH, "{what}: message {at} has {size} ids");
        assert_eq!(
            message.total_count,
            expected.len() as u64,
            "{what}: total_count of message {at}"
        );
    }
    let exported: Vec<String> = messages
        .iter()
        .flat_map(|message| message.customer_ids.iter().cloned())
        .collect();
    let distinct: HashSet<&String> = exported.iter().collect();
    assert_eq!(distinct.len(), exported.len(), "{what}: an id came twice");
    assert_same_ids(&exported, expected, what);
}

/// Counting, paging and exporting `audience` all give `expected`.
async fn assert_audience(shop: &mut Shop, audience: Audience<'_>, expected: &[String]) {
    let what = format!("{audience:?}");
    let counted = shop.count(audience).await.unwrap();
    assert_eq!(counted.count, expected.len() as u64, "count of {what}");
    assert_eq!(
        counted.sendable_count,
        shop.model.sendable(expected),
        "sendable count of {what}"
    );

    let (resolved, total) = shop.resolve_all(audience, 7).await.unwrap();
    assert_same_ids(&resolved, expected, &format!("pages of {what}"));
    assert_eq!(total, expected.len() as u64, "total_count of {what}");

    let messages = shop.export(Some(audience)).await.unwrap();
    assert_export(&messages, expected, &format!("export of {what}"));
}

fn assert_refused(status: &Status, code: Code, field: &str) {
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().starts_with(field),
        "`{}` does not name `{field}`",
        status.message()
    );
}

fn intersection(sets: &[&[String]]) -> usize {
    let (first, rest) = sets.split_first().unwrap();
    first
        .iter()
        .filter(|id| rest.iter().all(|set| set.contains(id)))
        .count()
}

fn union(sets: &[&[String]]) -> usize {
    sets.iter()
        .flat_map(|set| set.iter())
        .collect::<HashSet<_>>()
        .len()
}

/// `from` less `less`, in the order of `from`.
fn minus(from: &[String], less: &[String]) -> Vec<String> {
    let less: HashSet<&String> = less.iter().collect();
    from.iter()
        .filter(|id| !less.contains(id))
        .cloned()
        .collect()
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn a_million_customers_export_in_resolve_order_in_messages_of_at_most_ten_thousand() {
    const CUSTOMERS: usize = 1_000_000;
    const SEVEN: Rule = Rule {
        text: r#"tag = "seven""#,
        holds: |person| person.tagged("seven"),
    };
    const NOT_SEVEN: Rule = Rule {
        text: r#"NOT tag = "seven""#,
        holds: |person| !person.tagged("seven"),
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = Shop::new(&server, "big").await;
    let people = (0..CUSTOMERS).map(|i| {
        let attributes = Attributes {
            tags: vec![if i % 7 == 0 { "seven" } else { "other" }],
            state: None,
            opted_in: i % 3 == 0,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(people).await;

    for rule in [SEVEN, NOT_SEVEN] {
        let expected = shop.model.rule_members(rule);
        let counted = shop.count(Audience::Rule(rule.text)).await.unwrap();
        assert_eq!(
            counted.count,
            expected.len() as u64,
            "count of `{}`",
            rule.text
        );
        assert_eq!(counted.sendable_count, shop.model.sendable(&expected));

        let messages = shop.export(Some(Audience::Rule(rule.text))).await.unwrap();
        assert_export(&messages, &expected, rule.text);

        // The order of the export is the order of the pages.
        let (resolved, total) = shop
            .resolve_all(Audience::Rule(rule.text), BATCH as u32)
            .await
            .unwrap();
        assert_eq!(total, expected.len() as u64);
        let exported: Vec<String> = messages
            .into_iter()
            .flat_map(|message| message.customer_ids)
            .collect();
        assert_same_ids(&exported, &resolved, "export against pages");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_export_of_no_one_has_no_ids_and_unknown_names_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = Shop::new(&server, "shop").await;
    let people = (0..40).map(|i| {
        let attributes = Attributes {
            tags: if i % 3 == 0 { vec!["gold"] } else { vec![] },
            state: Some(if i % 2 == 0 { "CA" } else { "NY" }),
            opted_in: i % 4 != 1,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(people).await;
    shop.create_segment("west", CALIFORNIA, &ids([1, 3]), &ids([0, 6]))
        .await;

    let nobody = Rule {
        text: r#"tag = "nobody""#,
        holds: |person| person.tagged("nobody"),
    };
    let messages = shop
        .export(Some(Audience::Rule(nobody.text)))
        .await
        .unwrap();
    let expected = shop.model.rule_members(nobody);
    assert_export(&messages, &expected, "export of no one");

    let expected = shop.model.segment_members("west");
    assert_audience(&mut shop, Audience::Segment("west"), &expected).await;
    let expected = shop.model.rule_members(GOLD);
    assert_audience(&mut shop, Audience::Rule(GOLD.text), &expected).await;

    for audience in [Audience::Segment("east"), Audience::Snapshot("never-taken")] {
        let status = shop.export(Some(audience)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{audience:?}: {}",
            status.message()
        );
    }
    let status = shop.export(None).await.unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "audience");

    let mut stranger = Shop::new(&server, "nobody").await;
    let status = stranger
        .export(Some(Audience::Rule(GOLD.text)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    server.stop().await;
}

/// Sixty customers: gold every fourth, in California every third, opted in
/// every second, with an order every fifth.
async fn snapshot_shop(server: &TestServer) -> Shop {
    let mut shop = Shop::new(server, "shop").await;
    let people = (0..60).map(|i| {
        let attributes = Attributes {
            tags: vec![if i % 4 == 0 { "gold" } else { "plain" }],
            state: Some(if i % 3 == 0 { "CA" } else { "NY" }),
            opted_in: i % 2 == 0,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(people).await;
    shop.order(&ids((0..60).step_by(5))).await;
    shop
}

const GOLD_OR_ORDERED: Rule = Rule {
    text: r#"tag = "gold" OR ordered"#,
    holds: |person| person.tagged("gold") || person.ordered(),
};

#[tokio::test]
async fn a_snapshot_keeps_its_members_less_deleted_ones_through_changes_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = snapshot_shop(&server).await;
    shop.create_segment("west", CALIFORNIA, &ids([1]), &ids([3]))
        .await;

    let frozen_rule = shop.model.freeze(&shop.model.rule_members(GOLD_OR_ORDERED));
    let taken = shop
        .create_snapshot("broadcast-1", Audience::Rule(GOLD_OR_ORDERED.text))
        .await
        .unwrap();
    assert_eq!(taken.snapshot_id, "broadcast-1");
    assert_eq!(
        (taken.taken_count, taken.count),
        (frozen_rule.len() as u64, frozen_rule.len() as u64)
    );
    let frozen_segment = shop.model.freeze(&shop.model.segment_members("west"));
    let taken = shop
        .create_snapshot("", Audience::Segment("west"))
        .await
        .unwrap();
    let chosen_id = taken.snapshot_id;
    assert!(!chosen_id.is_empty(), "segmentd chose no snapshot id");
    let got = shop.get_snapshot(&chosen_id).await.unwrap();
    assert_eq!(got.segment_id, "west");
    assert_eq!(got.taken_count, frozen_segment.len() as u64);

    // Later: gold moves, some opt out, new orders, new gold customers, the
    // segment's rule changes, and members of both snapshots are deleted.
    let changed = (0..60).filter(|i| i % 4 == 1 || i % 8 == 0 || i % 6 == 0);
    let changed: Vec<(String, Attributes)> = changed
        .map(|i| {
            let attributes = Attributes {
                tags: vec![if i % 4 == 1 { "gold" } else { "plain" }],
                state: Some(if i % 3 == 0 { "CA" } else { "NY" }),
                opted_in: i % 6 != 0 && i % 2 == 0,
            };
            (customer_id(i), attributes)
        })
        .collect();
    shop.upsert(changed).await;
    shop.order(&ids((0..60).step_by(7))).await;
    let gold_in_california = || Attributes {
        tags: vec!["gold"],
        state: Some("CA"),
        opted_in: true,
    };
    shop.upsert((60..70).map(|i| (customer_id(i), gold_in_california())))
        .await;
    shop.update_segment_rule("west", NEW_YORK).await;
    shop.delete(&ids([0, 2, 5, 9, 12, 20, 33, 61])).await;
    // Two deleted members come back: new customers, in neither snapshot.
    shop.upsert(
        ids([0, 12])
            .into_iter()
            .map(|id| (id, gold_in_california())),
    )
    .await;

    let live_rule = shop.model.rule_members(GOLD_OR_ORDERED);
    let kept_rule = shop.model.still_live(&frozen_rule);
    let kept_segment = shop.model.still_live(&frozen_segment);
    assert_ne!(
        live_rule, kept_rule,
        "the changes should move the live rule"
    );
    assert_ne!(shop.model.segment_members("west"), kept_segment);

    let snapshots = [
        ("broadcast-1", &frozen_rule),
        (chosen_id.as_str(), &frozen_segment),
    ];
    for (snapshot_id, frozen) in snapshots {
        assert_snapshot(&mut shop, snapshot_id, frozen).await;
    }
    assert_audience(&mut shop, Audience::Rule(GOLD_OR_ORDERED.text), &live_rule).await;
    let west = shop.model.segment_members("west");
    assert_audience(&mut shop, Audience::Segment("west"), &west).await;

    // The same directory after a restart still has both snapshots.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    shop.client = server.client().await;
    for (snapshot_id, frozen) in snapshots {
        assert_snapshot(&mut shop, snapshot_id, frozen).await;
    }
    assert_audience(&mut shop, Audience::Rule(GOLD_OR_ORDERED.text), &live_rule).await;
    server.stop().await;
}

/// A snapshot of `frozen` holds those of them still live, in every way of
/// reading it.
async fn assert_snapshot(shop: &mut Shop, snapshot_id: &str, frozen: &[usize]) {
    let kept = shop.model.still_live(frozen);
    assert!(kept.len() < frozen.len(), "the test should delete members");
    let got = shop.get_snapshot(snapshot_id).await.unwrap();
    assert_eq!(
        (got.taken_count, got.count),
        (frozen.len() as u64, kept.len() as u64),
        "`{snapshot_id}`: taken_count and count"
    );
    assert_audience(shop, Audience::Snapshot(snapshot_id), &kept).await;
}

#[tokio::test]
async fn snapshots_list_in_id_order_and_a_deleted_one_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = snapshot_shop(&server).await;
    shop.create_segment("west", CALIFORNIA, &[], &[]).await;

    let mut frozen = BTreeMap::new();
    let opted_in = shop.model.rule_members(OPTED_IN);
    let west = shop.model.segment_members("west");
    let gold = shop.model.rule_members(GOLD);
    for (snapshot_id, audience, members) in [
        ("z-last", Audience::Rule(OPTED_IN.text), opted_in),
        ("a-first", Audience::Segment("west"), west),
        ("", Audience::Rule(GOLD.text), gold),
    ] {
        let taken = shop.create_snapshot(snapshot_id, audience).await.unwrap();
        frozen.insert(taken.snapshot_id, shop.model.freeze(&members));
    }
    let status = shop
        .create_snapshot("z-last", Audience::Rule(GOLD.text))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());

    shop.delete(&ids([0, 4, 6])).await;
    // The refused snapshot did not replace the one of that id.
    assert_snapshot(&mut shop, "z-last", &frozen["z-last"]).await;
    let listed = shop.list_snapshots().await;
    let listed_ids: Vec<&str> = listed.iter().map(|s| s.snapshot_id.as_str()).collect();
    let expected_ids: Vec<&str> = frozen.keys().map(String::as_str).collect();
    assert_eq!(listed_ids, expected_ids);
    for snapshot in &listed {
        let members = &frozen[&snapshot.snapshot_id];
        let kept = shop.model.still_live(members);
        assert_eq!(
            (snapshot.taken_count, snapshot.count),
            (members.len() as u64, kept.len() as u64),
            "listed `{}`",
            snapshot.snapshot_id
        );
    }

    shop.delete_snapshot("a-first").await.unwrap();
    let status = shop.get_snapshot("a-first").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    let status = shop.count(Audience::Snapshot("a-first")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    let status = shop.delete_snapshot("a-first").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    frozen.remove("a-first");
    let listed: Vec<String> = shop
        .list_snapshots()
        .await
        .into_iter()
        .map(|snapshot| snapshot.snapshot_id)
        .collect();
    assert_eq!(listed, frozen.keys().cloned().collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn overlap_counts_match_the_model_sets_of_rules_segments_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = Shop::new(&server, "shop").await;
    let people = (0..120).map(|i| {
        let attributes = Attributes {
            tags: if i % 3 == 0 {
                vec!["gold"]
            } else {
                vec!["plain"]
            },
            state: Some(if i % 4 == 0 { "CA" } else { "NY" }),
            opted_in: i % 5 != 0,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(people).await;
    const LOYAL: Rule = Rule {
        text: r#"opted_in AND NOT tag = "gold""#,
        holds: |person| person.opted_in() && !person.tagged("gold"),
    };
    shop.create_segment("loyal", LOYAL, &ids([0, 5]), &ids([1]))
        .await;
    let frozen = shop.model.freeze(&shop.model.rule_members(CALIFORNIA));
    shop.create_snapshot("ca-then", Audience::Rule(CALIFORNIA.text))
        .await
        .unwrap();

    // Half of California moves away and a few customers leave, so the
    // snapshot and the live rule differ.
    let movers = (0..120).filter(|i| i % 8 == 0).map(|i| {
        let attributes = Attributes {
            tags: if i % 3 == 0 {
                vec!["gold"]
            } else {
                vec!["plain"]
            },
            state: Some("NY"),
            opted_in: i % 5 != 0,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(movers.collect::<Vec<_>>()).await;
    shop.delete(&ids([4, 7, 30, 45])).await;

    let audiences = [
        Audience::Rule(GOLD.text),
        Audience::Segment("loyal"),
        Audience::Snapshot("ca-then"),
    ];
    let members = [
        shop.model.rule_members(GOLD),
        shop.model.segment_members("loyal"),
        shop.model.still_live(&frozen),
    ];
    assert_ne!(members[2], shop.model.rule_members(CALIFORNIA));
    let overlap = shop.overlap(&audiences).await.unwrap();
    assert_overlap(&overlap, &members);

    // Eight audiences, the most one call takes.
    let rules = [GOLD, CALIFORNIA, NEW_YORK, OPTED_IN, LOYAL, GOLD_OR_ORDERED];
    let mut audiences: Vec<Audience> = rules.iter().map(|r| Audience::Rule(r.text)).collect();
    let mut members: Vec<Vec<String>> = rules.iter().map(|r| shop.model.rule_members(*r)).collect();
    audiences.extend([Audience::Segment("loyal"), Audience::Snapshot("ca-then")]);
    members.extend([
        shop.model.segment_members("loyal"),
        shop.model.still_live(&frozen),
    ]);
    let overlap = shop.overlap(&audiences).await.unwrap();
    assert_overlap(&overlap, &members);

    for size in [1, 9] {
        let status = shop
            .overlap(&vec![Audience::Rule(GOLD.text); size])
            .await
            .unwrap_err();
        assert_refused(&status, Code::InvalidArgument, "audiences");
    }
    server.stop().await;
}

/// Every count of an overlap against the model's sets.
fn assert_overlap(overlap: &CountOverlapResponse, members: &[Vec<String>]) {
    let sizes: Vec<u64> = members.iter().map(|set| set.len() as u64).collect();
    assert_eq!(overlap.counts, sizes, "counts");

    let mut expected = BTreeMap::new();
    for first in 0..members.len() {
        for second in first + 1..members.len() {
            let count = intersection(&[&members[first], &members[second]]) as u64;
            expected.insert((first as u32, second as u32), count);
        }
    }
    let pairs: Vec<((u32, u32), u64)> = overlap
        .pairs
        .iter()
        .map(|pair| ((pair.first, pair.second), pair.count))
        .collect();
    assert_eq!(pairs.len(), expected.len(), "one entry for every pair");
    assert_eq!(pairs.into_iter().collect::<BTreeMap<_, _>>(), expected);

    let sets: Vec<&[String]> = members.iter().map(Vec::as_slice).collect();
    assert_eq!(
        overlap.intersection_count,
        intersection(&sets) as u64,
        "intersection"
    );
    assert_eq!(overlap.union_count, union(&sets) as u64, "union");
}

#[tokio::test]
async fn a_diff_counts_joiners_and_leavers_and_samples_the_first_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = Shop::new(&server, "shop").await;
    let people = (0..150).map(|i| {
        let attributes = Attributes {
            tags: if i % 3 == 0 { vec!["gold"] } else { vec![] },
            state: Some(if i % 2 == 0 { "CA" } else { "NY" }),
            opted_in: true,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(people).await;
    const BEFORE: Rule = Rule {
        text: r#"tag = "gold" OR state = "CA""#,
        holds: |person| person.tagged("gold") || person.lives_in("CA"),
    };
    const AFTER: Rule = Rule {
        text: r#"tag = "gold" OR state = "NY""#,
        holds: |person| person.tagged("gold") || person.lives_in("NY"),
    };
    shop.create_segment("before", BEFORE, &ids([1]), &ids([6]))
        .await;
    shop.delete(&ids([8, 9])).await;

    let before = shop.model.segment_members("before");
    let after = shop.model.rule_members(AFTER);
    let joined = minus(&after, &before);
    let left = minus(&before, &after);
    for sample_size in [0, 5, 1_000] {
        let diff = shop
            .diff(
                Audience::Segment("before"),
                Audience::Rule(AFTER.text),
                sample_size,
            )
            .await
            .unwrap();
        assert_eq!(
            (diff.before_count, diff.after_count),
            (before.len() as u64, after.len() as u64)
        );
        assert_eq!(
            (diff.joined_count, diff.left_count),
            (joined.len() as u64, left.len() as u64)
        );
        // Zero means the documented default of ten.
        let wanted = if sample_size == 0 {
            10
        } else {
            sample_size as usize
        };
        let what = format!("sample of {sample_size}");
        let first_joined = &joined[..wanted.min(joined.len())];
        assert_same_ids(&diff.joined_sample, first_joined, &format!("joined {what}"));
        let first_left = &left[..wanted.min(left.len())];
        assert_same_ids(&diff.left_sample, first_left, &format!("left {what}"));
    }

    let status = shop
        .diff(
            Audience::Segment("before"),
            Audience::Rule(AFTER.text),
            1_001,
        )
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "sample_size");
    server.stop().await;
}

/// Twelve customers and four segments, one of them archived:
/// `a-gold` includes one, `b-west` excludes two, `c-optin` (archived) both,
/// `d-gold-east` both.
async fn segments_shop(server: &TestServer) -> Shop {
    let mut shop = Shop::new(server, "shop").await;
    let people = (0..12).map(|i| {
        let attributes = Attributes {
            tags: if i % 3 == 0 { vec!["gold"] } else { vec![] },
            state: Some(if i % 2 == 0 { "CA" } else { "NY" }),
            opted_in: i % 4 != 3,
        };
        (customer_id(i), attributes)
    });
    shop.upsert(people).await;
    const GOLD_EAST: Rule = Rule {
        text: r#"tag = "gold" AND NOT state = "CA""#,
        holds: |person| person.tagged("gold") && !person.lives_in("CA"),
    };
    shop.create_segment("a-gold", GOLD, &ids([1]), &[]).await;
    shop.create_segment("b-west", CALIFORNIA, &[], &ids([0, 2]))
        .await;
    shop.create_segment("c-optin", OPTED_IN, &ids([3]), &ids([5]))
        .await;
    shop.create_segment("d-gold-east", GOLD_EAST, &ids([4]), &ids([9]))
        .await;
    shop.archive("c-optin").await;
    shop
}

#[tokio::test]
async fn a_customers_segments_follow_rule_include_and_exclude_lists() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = segments_shop(&server).await;
    shop.delete(&ids([7])).await;

    for i in (0..12).filter(|i| *i != 7) {
        let customer = customer_id(i);
        for show_archived in [false, true] {
            let expected: Vec<String> = shop
                .model
                .segments
                .iter()
                .filter(|(_, segment)| show_archived || !segment.archived)
                .filter(|(id, _)| shop.model.segment_members(id).contains(&customer))
                .map(|(id, _)| id.clone())
                .collect();
            let listed = shop
                .customer_segments(&customer, show_archived)
                .await
                .unwrap();
            assert_eq!(
                listed, expected,
                "`{customer}`, show_archived {show_archived}"
            );
        }
    }

    // A customer never seen, and one deleted, are unknown.
    for customer in ["stranger".to_owned(), customer_id(7)] {
        let status = shop.customer_segments(&customer, true).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "`{customer}`: {}",
            status.message()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn listed_segments_carry_member_and_sendable_counts_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = segments_shop(&server).await;
    shop.delete(&ids([3, 10])).await;

    let listed = shop.list_segments(true, true).await;
    let listed_ids: Vec<&String> = listed.iter().map(|s| &s.segment_id).collect();
    assert_eq!(listed_ids, shop.model.segments.keys().collect::<Vec<_>>());
    for segment in &listed {
        let members = shop.model.segment_members(&segment.segment_id);
        assert_eq!(
            (segment.member_count, segment.sendable_count),
            (
                Some(members.len() as u64),
                Some(shop.model.sendable(&members))
            ),
            "`{}`",
            segment.segment_id
        );
    }

    let live: Vec<String> = shop
        .model
        .segments
        .iter()
        .filter(|(_, segment)| !segment.archived)
        .map(|(id, _)| id.clone())
        .collect();
    let listed = shop.list_segments(false, false).await;
    let listed_ids: Vec<String> = listed.iter().map(|s| s.segment_id.clone()).collect();
    assert_eq!(listed_ids, live);
    for segment in &listed {
        assert_eq!(
            (segment.member_count, segment.sendable_count),
            (None, None),
            "`{}` without show_counts",
            segment.segment_id
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn paging_while_customers_come_and_go_returns_no_one_twice_and_misses_no_stayer() {
    const MEMBER: Rule = Rule {
        text: r#"tag = "m""#,
        holds: |person| person.tagged("m"),
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = Shop::new(&server, "shop").await;
    let member = |i: usize, is_member: bool| {
        let attributes = Attributes {
            tags: vec![if is_member { "m" } else { "n" }],
            state: None,
            opted_in: true,
        };
        (customer_id(i), attributes)
    };
    shop.upsert((0..2_500).map(|i| member(i, i % 5 != 0))).await;
    let first_members = shop.model.rule_members(MEMBER);
    let mut ever_members: HashSet<String> = first_members.iter().cloned().collect();
    let mut deleted = HashSet::new();

    let mut seen = HashSet::new();
    let mut page_token = String::new();
    let mut next_customer = 2_500;
    for page_number in 0.. {
        assert!(page_number < 100, "paging does not end");
        let request = ResolveSegmentRequest {
            tenant: shop.tenant.clone(),
            audience: Some(Audience::Rule(MEMBER.text).for_resolve()),
            page_size: 100,
            page_token,
            ..ResolveSegmentRequest::default()
        };
        let page = shop
            .client
            .resolve_segment(request)
            .await
            .unwrap()
            .into_inner();
        assert!(page.customer_ids.len() <= 100);
        for id in page.customer_ids {
            assert!(ever_members.contains(&id), "`{id}` was never a member");
            assert!(!deleted.contains(&id), "`{id}` came after it was deleted");
            assert!(seen.insert(id.clone()), "`{id}` came twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;

        // Between pages: ten new members, and five members not yet paged
        // leave, the very next one among them.
        if page_number < 12 {
            let newcomers: Vec<_> = (next_customer..next_customer + 10)
                .map(|i| member(i, true))
                .collect();
            next_customer += 10;
            ever_members.extend(newcomers.iter().map(|(id, _)| id.clone()));
            shop.upsert(newcomers).await;
        }
        let unseen: Vec<String> = shop
            .model
            .rule_members(MEMBER)
            .into_iter()
            .filter(|id| !seen.contains(id))
            .collect();
        if unseen.len() > 50 {
            let leaving: Vec<String> = [0, 1, unseen.len() / 3, unseen.len() / 2, unseen.len() - 1]
                .into_iter()
                .map(|at| unseen[at].clone())
                .collect();
            deleted.extend(leaving.iter().cloned());
            shop.delete(&leaving).await;
        }
    }

    let stayers: Vec<&String> = first_members
        .iter()
        .filter(|id| !deleted.contains(*id))
        .collect();
    assert!(
        deleted.len() > 50,
        "the test deletes too few: {}",
        deleted.len()
    );
    for id in stayers {
        assert!(
            seen.contains(id),
            "`{id}` was a member throughout but never came"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn audience_errors_name_the_field_or_the_missing_thing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut shop = snapshot_shop(&server).await;

    let request = CreateSnapshotRequest {
        tenant: shop.tenant.clone(),
        snapshot_id: "no-audience".into(),
        ..CreateSnapshotRequest::default()
    };
    let status = shop.client.create_snapshot(request).await.unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "audience");
    let status = shop
        .create_snapshot("of-nothing", Audience::Segment("east"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(status.message().contains("east"), "{}", status.message());

    let audiences = [Audience::Rule(GOLD.text), Audience::Rule("tag = ")];
    let status = shop.overlap(&audiences).await.unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "audiences[1].rule_text");
    let audiences = [Audience::Rule(GOLD.text), Audience::Snapshot("never-taken")];
    let status = shop.overlap(&audiences).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());

    let request = DiffAudiencesRequest {
        tenant: shop.tenant.clone(),
        before: Some(Audience::Rule(GOLD.text).spec()),
        ..DiffAudiencesRequest::default()
    };
    let status = shop.client.diff_audiences(request).await.unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "after");

    let mut stranger = Shop::new(&server, "nobody").await;
    let status = stranger.get_snapshot("broadcast-1").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    let status = stranger
        .customer_segments(&customer_id(0), false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    server.stop().await;
}
