//! The change feed: who entered and who left each saved segment, as writes,
//! segment edits and the clock move its members.
//!
//! Every saved segment of a tenant, archived or not, has its members kept
//! here, whether anyone watches or not, so that a consumer that comes back
//! gets what it missed. After each write, the segments that read what the
//! write touched (an index from qualifier values to segments, `Deps`) are
//! evaluated again and compared with their kept members; the differences
//! become numbered entries of the tenant's feed. A tick evaluates the
//! segments whose rules hold a relative window (`WITHIN`, `SINCE`), so that
//! customers whose events age out leave without waiting for a write.
//!
//! Entries are stored with the rows of `store::feed`, without a flush of
//! their own, and shown to watchers only once a flush has made them durable:
//! a watcher never sees a sequence number that a crash could take back. At
//! start, the members are rebuilt from their last checkpoint and the stored
//! entries after it, and compared with an evaluation at that moment, so the
//! effect of an acknowledged write whose entries were lost is sent then
//! (cause `Recovery`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use roaring::RoaringBitmap;
use tokio::sync::watch;

use super::{Engine, Tenant, read};
use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::index::eval::{Evaluation, number_attr, presence_key, set_key};
use crate::rule::{EventKind, NumberField, Predicate, Rule, Window};
use crate::store::feed::{self as stored, ChangeCause, FeedEntry, MembersCheckpoint};
use crate::store::keys::{BitmapKey, NumberAttr};
use crate::store::{Batch, Store};
use crate::time::Seconds;

/// Customer ids in one entry, entered and left together.
pub const MAX_IDS_PER_ENTRY: usize = 10_000;
/// Segments one watch may follow.
pub const MAX_WATCHED_SEGMENTS: usize = 100;
/// Entries read from storage at a time by a watch.
pub const READ_BATCH: usize = 256;

/// What a segment's members can depend on. A write touches inputs; a
/// segment reads them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// Which customers are live: read by negations, include and exclude
    /// lists, and the amounts that default to 0.
    Live,
    /// One value bitmap: opted in, a tag, a state, a time zone, a list, or
    /// the presence of a set-like field.
    Value(BitmapKey),
    /// Any event of one kind, on any day.
    Event(EventKind),
    /// One bit-sliced number.
    Number(NumberAttr),
    /// The answers to one question.
    Answer {
        experience: String,
        question: String,
    },
}

impl Input {
    /// The input a stored bitmap belongs to.
    pub fn of_key(key: &BitmapKey) -> Input {
        match key {
            BitmapKey::Live => Input::Live,
            BitmapKey::EventAny(kind) | BitmapKey::EventDay(kind, _) => Input::Event(*kind),
            BitmapKey::ClickedBroadcast(_) | BitmapKey::ClickedBroadcastDay(..) => {
                Input::Event(EventKind::Clicked)
            }
            BitmapKey::Slice(attr, _) | BitmapKey::Exists(attr) => Input::Number(*attr),
            BitmapKey::Answered {
                experience,
                question,
            }
            | BitmapKey::Answer {
                experience,
                question,
                ..
            } => Input::Answer {
                experience: experience.clone(),
                question: question.clone(),
            },
            BitmapKey::OptedIn
            | BitmapKey::Tag(_)
            | BitmapKey::State(_)
            | BitmapKey::Timezone(_)
            | BitmapKey::KlaviyoList(_)
            | BitmapKey::Present(_) => Input::Value(key.clone()),
        }
    }
}

/// What one change to a tenant touched.
#[derive(Debug, Default)]
pub struct Touched {
    pub inputs: HashSet<Input>,
    /// Every segment may have changed (a new time zone).
    pub everything: bool,
    /// The customers whose data changed, when known: no one else's
    /// membership can have moved (membership depends on a customer's own
    /// data alone), so only they are evaluated again.
    pub customers: Option<RoaringBitmap>,
    /// Merchant ids of customers deleted by the change, by dense id: they
    /// are no longer in the index, and their leaving is still told.
    pub departed: HashMap<u32, String>,
}

/// Whom a refresh evaluates again.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    /// A write's customers, and the ids of those it deleted; `None`: everyone.
    touched: Option<&'a Touched>,
}

impl Scope<'_> {
    const EVERYONE: Scope<'static> = Scope { touched: None };
}

/// Which segments read what.
#[derive(Debug, Default)]
struct Deps {
    readers: HashMap<Input, BTreeSet<String>>,
    /// Segments with a relative window in their rule or in a segment it
    /// refers to.
    timed: BTreeSet<String>,
    /// Each segment and the segments its rule reads, itself included.
    reads: HashMap<String, HashSet<String>>,
}

impl Deps {
    fn build(index: &TenantIndex) -> Deps {
        let mut deps = Deps::default();
        for segment_id in index.segments.keys() {
            let mut reach = Reach::default();
            reach.segment(index, segment_id);
            for input in reach.inputs {
                deps.readers
                    .entry(input)
                    .or_default()
                    .insert(segment_id.clone());
            }
            if reach.timed {
                deps.timed.insert(segment_id.clone());
            }
            deps.reads.insert(segment_id.clone(), reach.segments);
        }
        deps
    }

    /// The segments a change may have moved.
    fn affected(&self, touched: &Touched) -> BTreeSet<String> {
        if touched.everything {
            return self.reads.keys().cloned().collect();
        }
        touched
            .inputs
            .iter()
            .filter_map(|input| self.readers.get(input))
            .flatten()
            .cloned()
            .collect()
    }

    /// `segment_id` and every segment that reads it.
    fn readers_of(&self, segment_id: &str) -> BTreeSet<String> {
        self.reads
            .iter()
            .filter(|(_, reads)| reads.contains(segment_id))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// What a segment's rule reads, through the segments it refers to.
#[derive(Default)]
struct Reach {
    inputs: HashSet<Input>,
    timed: bool,
    segments: HashSet<String>,
}

impl Reach {
    fn segment(&mut self, index: &TenantIndex, segment_id: &str) {
        if !self.segments.insert(segment_id.to_owned()) {
            return;
        }
        let Some(segment) = index.segments.get(segment_id) else {
            return;
        };
        let record = &segment.record;
        if !record.included_customer_ids.is_empty() || !record.excluded_customer_ids.is_empty() {
            self.inputs.insert(Input::Live);
        }
        if let Some(rule) = &segment.rule {
            self.rule(index, rule);
        }
    }

    fn rule(&mut self, index: &TenantIndex, rule: &Rule) {
        match rule {
            Rule::And(children) | Rule::Or(children) => {
                children.iter().for_each(|child| self.rule(index, child))
            }
            Rule::Not(child) => {
                self.inputs.insert(Input::Live);
                self.rule(index, child);
            }
            Rule::Predicate(predicate) => self.predicate(index, predicate),
        }
    }

    fn predicate(&mut self, index: &TenantIndex, predicate: &Predicate) {
        match predicate {
            Predicate::OptedIn => {
                self.inputs.insert(Input::Value(BitmapKey::OptedIn));
            }
            Predicate::Event { kind, window, .. } => {
                self.inputs.insert(Input::Event(*kind));
                self.window(window.as_ref());
            }
            Predicate::Answered {
                experience,
                question,
                ..
            } => {
                self.inputs.insert(Input::Answer {
                    experience: experience.clone(),
                    question: question.clone(),
                });
            }
            Predicate::Set { field, values } => {
                for value in values {
                    self.inputs.insert(Input::of_key(&set_key(*field, value)));
                }
            }
            Predicate::Number { field, .. } => {
                self.inputs.insert(Input::Number(number_attr(*field)));
                if matches!(field, NumberField::Spent | NumberField::OrderCount) {
                    // Every live customer has these, 0 without orders.
                    self.inputs.insert(Input::Live);
                }
            }
            Predicate::Created(window) => {
                self.inputs.insert(Input::Number(NumberAttr::Created));
                self.window(Some(window));
            }
            Predicate::Customers(_) => {
                self.inputs.insert(Input::Live);
            }
            Predicate::Segment(segment_id) => self.segment(index, segment_id),
            Predicate::Presence { field, is_set } => {
                self.inputs.insert(Input::of_key(&presence_key(*field)));
                if !is_set {
                    self.inputs.insert(Input::Live);
                }
            }
        }
    }

    fn window(&mut self, window: Option<&Window>) {
        if matches!(window, Some(Window::Within(_) | Window::Since(_))) {
            self.timed = true;
        }
    }
}

/// A tenant's feed: every saved segment's members as last told, and the
/// sequence numbers.
#[derive(Debug)]
pub struct TenantFeed {
    members: HashMap<String, RoaringBitmap>,
    deps: Deps,
    /// The last sequence handed out.
    head: u64,
    /// Entries up to this sequence are pruned.
    floor: u64,
    /// Customer ids told per segment since its members were last stored.
    since_checkpoint: HashMap<String, u64>,
    /// The last sequence known durable, for watchers.
    published: watch::Sender<u64>,
    /// When entries were last pruned.
    last_prune: Seconds,
    /// What the feed found in storage at start.
    start: Start,
}

/// What a tenant's feed found in storage at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Nothing: no change was ever shown (a new tenant, or data from before
    /// the feed). The members are taken as they are, with no changes.
    Fresh,
    /// Every segment's members stored at the head, as a clean stop leaves
    /// them: nothing to recover.
    Clean,
    /// Otherwise: the members are evaluated and the difference told.
    Unclean,
}

impl TenantFeed {
    /// The feed of a tenant with nothing stored.
    pub fn empty() -> TenantFeed {
        TenantFeed {
            members: HashMap::new(),
            deps: Deps::default(),
            head: 0,
            floor: 0,
            since_checkpoint: HashMap::new(),
            published: watch::Sender::new(0),
            last_prune: Seconds::MIN,
            start: Start::Fresh,
        }
    }

    /// Rebuilds a tenant's feed from storage: the members of each segment as
    /// of its checkpoint, with the stored entries after it replayed.
    pub fn load(store: &Store, index: &TenantIndex) -> Result<TenantFeed> {
        let tenant = &index.tenant;
        let head = store.feed_head(tenant)?;
        let oldest = store.feed_oldest(tenant)?;
        let mut feed = TenantFeed::empty();
        feed.head = head;
        feed.floor = oldest.map_or(head, |oldest| oldest.saturating_sub(1));
        feed.published = watch::Sender::new(head);
        feed.deps = Deps::build(index);

        let mut checkpoints: HashMap<String, u64> = HashMap::new();
        for MembersCheckpoint {
            segment_id,
            sequence,
            members,
        } in store.feed_members(tenant)?
        {
            checkpoints.insert(segment_id.clone(), sequence);
            feed.members.insert(segment_id, members);
        }
        feed.start = if head == 0 && checkpoints.is_empty() {
            Start::Fresh
        } else if index
            .segments
            .keys()
            .all(|segment_id| checkpoints.get(segment_id) == Some(&head))
        {
            Start::Clean
        } else {
            Start::Unclean
        };
        let mut after = checkpoints.values().copied().min().unwrap_or(0);
        if checkpoints.len() < index.segments.len() {
            // A segment with no checkpoint replays from its first entry.
            after = feed.floor;
        }
        loop {
            let entries = store.feed_entries(tenant, after, 4_096)?;
            let Some(&(last, _)) = entries.last() else {
                break;
            };
            for (sequence, entry) in entries {
                if checkpoints
                    .get(&entry.segment_id)
                    .is_some_and(|&checkpoint| sequence <= checkpoint)
                {
                    continue;
                }
                let members = feed.members.entry(entry.segment_id.clone()).or_default();
                members.extend(entry.entered.iter().map(|(dense, _)| *dense));
                for (dense, _) in &entry.left {
                    members.remove(*dense);
                }
                *feed.since_checkpoint.entry(entry.segment_id).or_default() +=
                    (entry.entered.len() + entry.left.len()) as u64;
            }
            after = last;
        }
        Ok(feed)
    }

    /// The last sequence known durable.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }
}

/// A segment's members after a refresh.
struct Updated {
    segment_id: String,
    members: RoaringBitmap,
    /// Customer ids told since the members were last stored.
    since: u64,
    /// Whether the members are stored with this refresh.
    stored: bool,
}

/// One watch's view of a tenant's feed.
pub struct FeedWatch {
    /// The last durable sequence, as it grows.
    pub published: watch::Receiver<u64>,
}

/// Entries read for a watch.
pub struct FeedRead {
    pub entries: Vec<(u64, FeedEntry)>,
    /// The last sequence looked at: entries up to it were all read.
    pub through: u64,
}

/// The members of watched segments at one sequence, by merchant id.
pub struct FeedInitial {
    pub sequence: u64,
    pub time: Seconds,
    pub segments: Vec<(String, Vec<String>)>,
}

impl Engine {
    /// Evaluates `segment_ids` again and stores, as new entries, how their
    /// members moved. Called with the tenant's writer lock held, after the
    /// index shows the change; returns the new head if entries were made.
    pub(super) fn feed_refresh(
        &self,
        tenant: &Tenant,
        segment_ids: &BTreeSet<String>,
        scope: Scope<'_>,
        cause: ChangeCause,
        now: Seconds,
    ) -> Option<u64> {
        if segment_ids.is_empty() {
            return None;
        }
        let index = read(&tenant.index);
        let mut feed = lock(&tenant.feed);
        let outcome = crate::cancel::Cancel::default()
            .run(|| self.feed_diff(&index, &mut feed, segment_ids, scope, cause, now));
        match outcome {
            Ok(head) => head,
            Err(error) => {
                // The write itself is durable; its changes are found again by
                // the next refresh of these segments, or at the next start.
                tracing::error!(tenant = index.tenant, %error, "change feed not updated");
                None
            }
        }
    }

    fn feed_diff(
        &self,
        index: &TenantIndex,
        feed: &mut TenantFeed,
        segment_ids: &BTreeSet<String>,
        scope: Scope<'_>,
        cause: ChangeCause,
        now: Seconds,
    ) -> Result<Option<u64>> {
        let no_one = HashMap::new();
        let departed = scope.touched.map_or(&no_one, |touched| &touched.departed);
        let among = scope.touched.and_then(|touched| touched.customers.as_ref());
        let evaluation = Evaluation::new(index, &self.store, now);
        let mut batch = Batch::default();
        let mut head = feed.head;
        let mut updated = Vec::new();
        for segment_id in segment_ids {
            if !index.segments.contains_key(segment_id) {
                continue;
            }
            let empty = RoaringBitmap::new();
            let before = feed.members.get(segment_id).unwrap_or(&empty);
            let current = match among {
                // The others stay as they were.
                Some(customers) => {
                    (before - customers) | evaluation.segment_among(segment_id, customers)?
                }
                None => evaluation.segment(segment_id)?,
            };
            let entered = &current - before;
            let left = before - &current;
            if entered.is_empty() && left.is_empty() {
                continue;
            }
            let name = |dense: u32| -> (u32, String) {
                let id = index
                    .customer_id(dense)
                    .map(str::to_owned)
                    .or_else(|| departed.get(&dense).cloned())
                    .unwrap_or_else(|| {
                        tracing::error!(
                            tenant = index.tenant,
                            dense,
                            "a member has no customer id"
                        );
                        String::new()
                    });
                (dense, id)
            };
            let mut entered = entered.iter().map(name).peekable();
            let mut left = left.iter().map(name).peekable();
            let mut told = 0;
            while entered.peek().is_some() || left.peek().is_some() {
                let entered: Vec<_> = entered.by_ref().take(MAX_IDS_PER_ENTRY).collect();
                let room = MAX_IDS_PER_ENTRY - entered.len();
                let left: Vec<_> = left.by_ref().take(room).collect();
                told += (entered.len() + left.len()) as u64;
                head += 1;
                let entry = FeedEntry {
                    segment_id: segment_id.clone(),
                    cause,
                    time: now,
                    entered,
                    left,
                };
                stored::put_entry(&mut batch, &index.tenant, head, &entry)?;
            }
            let since = feed.since_checkpoint.get(segment_id).copied().unwrap_or(0) + told;
            updated.push(Updated {
                segment_id: segment_id.clone(),
                // Keep the replay at start shorter than the members themselves.
                stored: since > 10_000 + current.len(),
                since,
                members: current,
            });
        }
        if head == feed.head {
            return Ok(None);
        }
        for update in updated.iter().filter(|update| update.stored) {
            let row = MembersCheckpoint {
                segment_id: update.segment_id.clone(),
                sequence: head,
                members: update.members.clone(),
            };
            stored::put_members(&mut batch, &index.tenant, &row)?;
        }
        stored::put_head(&mut batch, &index.tenant, head);
        self.store.apply_unflushed(batch)?;

        feed.head = head;
        for update in updated {
            let since = if update.stored { 0 } else { update.since };
            feed.since_checkpoint
                .insert(update.segment_id.clone(), since);
            feed.members.insert(update.segment_id, update.members);
        }
        Ok(Some(head))
    }

    /// Makes the feed durable up to `head` and shows it to watchers.
    pub(super) fn feed_publish(&self, tenant: &Tenant, head: Option<u64>) {
        let Some(head) = head else {
            return;
        };
        if let Err(error) = self.store.sync() {
            tracing::error!(%error, "change feed not flushed");
            return;
        }
        lock(&tenant.feed).published.send_if_modified(|published| {
            let moved = head > *published;
            *published = (*published).max(head);
            moved
        });
    }

    /// After a durable write: tells the segments that read what it touched.
    pub(super) fn feed_after_write(
        &self,
        tenant: &Tenant,
        touched: &Touched,
        now: Seconds,
    ) -> Option<u64> {
        let affected = lock(&tenant.feed).deps.affected(touched);
        let scope = Scope {
            touched: Some(touched),
        };
        self.feed_refresh(tenant, &affected, scope, ChangeCause::Write, now)
    }

    /// After a segment was saved: rebuilds the dependency index and tells
    /// the segment and those that refer to it.
    pub(super) fn feed_after_segment_edit(
        &self,
        tenant: &Tenant,
        segment_id: &str,
        now: Seconds,
    ) -> Option<u64> {
        let affected = {
            let index = read(&tenant.index);
            let mut feed = lock(&tenant.feed);
            feed.deps = Deps::build(&index);
            feed.deps.readers_of(segment_id)
        };
        self.feed_refresh(
            tenant,
            &affected,
            Scope::EVERYONE,
            ChangeCause::SegmentEdit,
            now,
        )
    }

    /// Moves every tenant's relative windows to `now`, and prunes entries
    /// older than `retention` seconds.
    pub fn feed_tick(&self, now: Seconds, retention: Seconds) {
        for tenant in self.stored_tenants() {
            let head = {
                let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
                let timed = lock(&tenant.feed).deps.timed.clone();
                let head =
                    self.feed_refresh(&tenant, &timed, Scope::EVERYONE, ChangeCause::Time, now);
                if let Err(error) = self.feed_prune(&tenant, now, retention) {
                    tracing::error!(%error, "change feed not pruned");
                }
                head
            };
            self.feed_publish(&tenant, head);
        }
    }

    /// Removes entries older than `retention`, at most once per tenth of
    /// it (and at least once an hour), first storing every segment's
    /// members so that a start never needs a pruned entry.
    fn feed_prune(&self, tenant: &Tenant, now: Seconds, retention: Seconds) -> Result<()> {
        let every = (retention / 10).clamp(0, 3_600);
        if now.saturating_sub(lock(&tenant.feed).last_prune) < every {
            return Ok(());
        }
        let index = read(&tenant.index);
        let Some(oldest) = self.store.feed_oldest(&index.tenant)? else {
            return Ok(());
        };
        let oldest_time = self
            .store
            .feed_entries(&index.tenant, oldest - 1, 1)?
            .first()
            .map_or(Seconds::MAX, |(_, entry)| entry.time);
        let before = now.saturating_sub(retention);
        if oldest_time >= before {
            return Ok(());
        }
        let head = self.feed_store_members(&index, &mut lock(&tenant.feed))?;
        self.store.sync()?;
        self.store.feed_prune(&index.tenant, head, before)?;
        let mut feed = lock(&tenant.feed);
        feed.floor = match self.store.feed_oldest(&index.tenant)? {
            Some(oldest) => oldest - 1,
            None => head,
        };
        feed.last_prune = now;
        Ok(())
    }

    /// Stores every segment's members as of the head (not flushed).
    fn feed_store_members(&self, index: &TenantIndex, feed: &mut TenantFeed) -> Result<u64> {
        let mut batch = Batch::default();
        let empty = RoaringBitmap::new();
        // Every segment, those with no members too: a start that finds
        // every segment stored at the head knows the feed missed nothing.
        for segment_id in index.segments.keys() {
            let row = MembersCheckpoint {
                segment_id: segment_id.clone(),
                sequence: feed.head,
                members: feed.members.get(segment_id).unwrap_or(&empty).clone(),
            };
            stored::put_members(&mut batch, &index.tenant, &row)?;
        }
        self.store.apply_unflushed(batch)?;
        feed.since_checkpoint.clear();
        Ok(feed.head)
    }

    /// Stores every tenant's feed members, so that the next start replays
    /// nothing; a clean shutdown calls it before its flush.
    pub fn feed_checkpoint_all(&self) -> Result<()> {
        for tenant in self.stored_tenants() {
            let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let index = read(&tenant.index);
            self.feed_store_members(&index, &mut lock(&tenant.feed))?;
        }
        Ok(())
    }

    /// At start: tells, as `Recovery` entries, what the stored feed missed.
    pub(super) fn feed_recover(&self, now: Seconds) -> Result<()> {
        for tenant in self.stored_tenants() {
            let head = {
                let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
                let start = lock(&tenant.feed).start;
                let all: BTreeSet<String> = read(&tenant.index).segments.keys().cloned().collect();
                match start {
                    Start::Clean => None,
                    Start::Fresh => {
                        let index = read(&tenant.index);
                        let evaluation = Evaluation::new(&index, &self.store, now);
                        let mut feed = lock(&tenant.feed);
                        for segment_id in &all {
                            let members = evaluation.segment(segment_id)?;
                            feed.members.insert(segment_id.clone(), members);
                        }
                        self.feed_store_members(&index, &mut feed)?;
                        self.store.sync()?;
                        None
                    }
                    Start::Unclean => self.feed_refresh(
                        &tenant,
                        &all,
                        Scope::EVERYONE,
                        ChangeCause::Recovery,
                        now,
                    ),
                }
            };
            self.feed_publish(&tenant, head);
        }
        Ok(())
    }

    /// Starts following segments of a tenant; every one must exist.
    pub fn feed_watch(&self, tenant: &str, segment_ids: &[String]) -> Result<FeedWatch> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        for segment_id in segment_ids {
            if !index.segments.contains_key(segment_id) {
                return Err(Error::NotFound(format!("segment `{segment_id}` not found")));
            }
        }
        Ok(FeedWatch {
            published: lock(&tenant.feed).published.subscribe(),
        })
    }

    /// The current members of segments and the sequence they are at, made
    /// durable first.
    pub fn feed_initial(&self, tenant: &str, segment_ids: &[String]) -> Result<FeedInitial> {
        let tenant = self.tenant(tenant)?;
        let initial = {
            let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let index = read(&tenant.index);
            let feed = lock(&tenant.feed);
            let mut segments = Vec::with_capacity(segment_ids.len());
            for segment_id in segment_ids {
                if !index.segments.contains_key(segment_id) {
                    return Err(Error::NotFound(format!("segment `{segment_id}` not found")));
                }
                let ids = feed
                    .members
                    .get(segment_id)
                    .map_or_else(Vec::new, |members| {
                        members
                            .iter()
                            .filter_map(|dense| index.customer_id(dense).map(str::to_owned))
                            .collect()
                    });
                segments.push((segment_id.clone(), ids));
            }
            FeedInitial {
                sequence: feed.head,
                time: chrono::Utc::now().timestamp(),
                segments,
            }
        };
        self.feed_publish(&tenant, Some(initial.sequence));
        Ok(initial)
    }

    /// Entries after `after`, up to the durable head; `OUT_OF_RANGE` when
    /// `after` is pruned or ahead of the feed.
    pub fn feed_read(&self, tenant: &str, after: u64) -> Result<FeedRead> {
        let tenant = self.tenant(tenant)?;
        let (floor, published) = {
            let feed = lock(&tenant.feed);
            (feed.floor, feed.published())
        };
        if after < floor {
            return Err(Error::OutOfRange(format!(
                "after_sequence {after} is older than the feed keeps (it starts after {floor}): \
                 read the segments again by watching without after_sequence"
            )));
        }
        if after > published {
            return Err(Error::OutOfRange(format!(
                "after_sequence {after} is ahead of the feed, which is at {published}"
            )));
        }
        let name = read(&tenant.index).tenant.clone();
        let mut entries = self.store.feed_entries(&name, after, READ_BATCH)?;
        entries.retain(|(sequence, _)| *sequence <= published);
        let through = if entries.len() == READ_BATCH {
            entries.last().map_or(after, |(sequence, _)| *sequence)
        } else {
            published
        };
        Ok(FeedRead { entries, through })
    }

    /// The tenants with something stored.
    fn stored_tenants(&self) -> Vec<Arc<Tenant>> {
        read(&self.tenants)
            .values()
            .filter(|tenant| tenant.stored.load(std::sync::atomic::Ordering::Acquire))
            .cloned()
            .collect()
    }
}

fn lock(feed: &Mutex<TenantFeed>) -> std::sync::MutexGuard<'_, TenantFeed> {
    feed.lock().unwrap_or_else(PoisonError::into_inner)
}
