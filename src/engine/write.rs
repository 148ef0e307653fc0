//! A write batch: plans a change against the current index, makes it durable
//! as one atomic sled batch, and only then applies it to the index.
//!
//! Bitmap changes are collected as per-bitmap `add` and `remove` sets, then
//! written as one delta row (`store::delta`), or, when the log is long, as a
//! checkpoint that rewrites every 2^16-id chunk the log touched. Bitmaps derived from
//! customer attributes (state, tags, consent, the bit-sliced numbers) are
//! computed at the end from each touched customer's record before and after,
//! so every write path keeps them right the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use roaring::RoaringBitmap;

use super::types::{CustomerUpdate, EventData, NewEvent, WriteSummary};
use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::index::bsi;
use crate::index::cache::Family;
use crate::rule::EventKind;
use crate::store::delta::{self, DeltaLog, chunks_of};
use crate::store::event_ids;
use crate::store::history::Packs;
use crate::store::keys::{
    self, BitmapKey, NumberAttr, PRESENT_KLAVIYO_LIST, PRESENT_STATE, PRESENT_TAG, PRESENT_TIMEZONE,
};
use crate::store::names;
use crate::store::records::{AnswerRecord, CustomerRecord, TenantMeta};
use crate::store::{Batch, Store, chunk_bounds, encode_json};
use crate::time::{self, Seconds};

/// Ids to add to and remove from one bitmap.
#[derive(Debug, Default)]
pub struct BitmapChange {
    pub add: RoaringBitmap,
    pub remove: RoaringBitmap,
}

/// A touched customer: as stored before the batch, and as it will be.
struct Touched {
    before: Option<CustomerRecord>,
    after: Option<CustomerRecord>,
}

/// A change in preparation.
pub struct WriteBatch<'a> {
    index: &'a TenantIndex,
    store: &'a Store,
    now: Seconds,
    meta: TenantMeta,
    bitmaps: HashMap<BitmapKey, BitmapChange>,
    touched: BTreeMap<u32, Touched>,
    new_ids: HashMap<String, u32>,
    deleted_ids: HashMap<String, u32>,
    events_seen: HashSet<String>,
    packs: Packs,
    /// The ids of the events applied, in order.
    event_ids: Vec<String>,
    batch: Batch,
    /// Fold the delta log into the stored bitmaps whatever its size.
    force_checkpoint: bool,
    /// Kinds of the events recorded, for the clause cache.
    event_kinds: BTreeSet<EventKind>,
    /// Customers deleted, by dense id, for the change feed.
    departed: Vec<(u32, String)>,
    pub summary: WriteSummary,
}

/// What a batch did to the delta log.
enum LogUpdate {
    /// It changed no bitmap.
    Unchanged,
    /// It added its row: write sequence, size, and the chunks it touched.
    Appended {
        sequence: u64,
        bytes: usize,
        chunks: Vec<(BitmapKey, Vec<u16>)>,
    },
    /// It rewrote every dirty chunk and removed the log.
    Checkpointed,
}

/// A durable change, ready to apply to the index.
pub struct Committed {
    meta: TenantMeta,
    log: LogUpdate,
    bitmaps: HashMap<BitmapKey, BitmapChange>,
    new_ids: HashMap<String, u32>,
    deleted_ids: HashMap<String, u32>,
    event_kinds: BTreeSet<EventKind>,
    /// Every customer the batch read or changed: the only ones whose
    /// membership of any segment it can have moved.
    customers: RoaringBitmap,
    departed: Vec<(u32, String)>,
    pub summary: WriteSummary,
}

impl<'a> WriteBatch<'a> {
    /// Starts a batch on `index`.
    pub fn new(index: &'a TenantIndex, store: &'a Store, now: Seconds) -> Self {
        let mut meta = index.meta.clone();
        meta.write_sequence += 1;
        WriteBatch {
            index,
            store,
            now,
            meta,
            bitmaps: HashMap::new(),
            touched: BTreeMap::new(),
            new_ids: HashMap::new(),
            deleted_ids: HashMap::new(),
            events_seen: HashSet::new(),
            packs: Packs::default(),
            event_ids: Vec::new(),
            batch: Batch::default(),
            force_checkpoint: false,
            event_kinds: BTreeSet::new(),
            departed: Vec::new(),
            summary: WriteSummary::default(),
        }
    }

    /// Creates or updates a customer.
    pub fn upsert(&mut self, update: CustomerUpdate) -> Result<()> {
        let (dense, created) = self.customer(&update.customer_id)?;
        if created {
            self.summary.created += 1;
        } else {
            self.summary.updated += 1;
        }
        let now = self.now;
        let record = self.record_mut(dense)?;
        if let Some(email) = update.email {
            record.email = Some(email);
        }
        if let Some(phone) = update.phone {
            record.phone = Some(phone);
        }
        if let Some(state) = update.state {
            record.state = state;
        }
        if let Some(time_zone) = update.time_zone {
            record.time_zone = time_zone;
        }
        if let Some(tags) = update.tags {
            record.tags = tags;
        }
        if let Some(lists) = update.klaviyo_lists {
            record.klaviyo_lists = lists;
        }
        for list in update.add_klaviyo_lists {
            if !record.klaviyo_lists.contains(&list) {
                record.klaviyo_lists.push(list);
            }
        }
        record
            .klaviyo_lists
            .retain(|list| !update.remove_klaviyo_lists.contains(list));
        if let Some(cents) = update.lifetime_spend_cents {
            record.lifetime_spend_cents = Some(cents);
        }
        if let Some(opted_in) = update.opted_in {
            // An attribute sync is a consent change at the time it arrives.
            if record.consent_time.is_none_or(|t| now >= t) {
                record.opted_in = opted_in;
                record.consent_time = Some(now);
            }
        }
        if let Some(create_time) = update.create_time {
            record.create_time = Some(create_time);
        }
        Ok(())
    }

    /// Records an event; an event id seen before changes nothing.
    pub fn record(&mut self, event: NewEvent) -> Result<()> {
        if !self.events_seen.insert(event.event_id.clone())
            || self.store.event_seen(&self.index.tenant, &event.event_id)?
        {
            self.summary.duplicates += 1;
            return Ok(());
        }
        self.summary.recorded += 1;
        self.event_ids.push(event.event_id.clone());

        let (dense, _) = self.customer(&event.customer_id)?;
        let t = event.time;
        let record = self.record_mut(dense)?;
        record.first_event_time = Some(record.first_event_time.map_or(t, |first| first.min(t)));

        let kind = match &event.data {
            EventData::Order { value_cents } => {
                record.order_count += 1;
                record.spent_cents =
                    record
                        .spent_cents
                        .checked_add(*value_cents)
                        .ok_or_else(|| {
                            Error::invalid(
                                "events.order.value_cents",
                                "the customer's total spend overflows",
                            )
                        })?;
                Some(EventKind::Ordered)
            }
            EventData::Message => Some(EventKind::Messaged),
            EventData::Click { .. } => Some(EventKind::Clicked),
            EventData::AbandonedCart { value_cents } => {
                if record.latest_cart.is_none_or(|(latest, _)| t >= latest) {
                    record.latest_cart = Some((t, *value_cents));
                }
                Some(EventKind::AbandonedCart)
            }
            EventData::OptIn | EventData::OptOut => {
                if record.consent_time.is_none_or(|latest| t >= latest) {
                    record.opted_in = matches!(event.data, EventData::OptIn);
                    record.consent_time = Some(t);
                }
                None
            }
            EventData::Answer {
                experience_id,
                question_id,
                answer,
            } => {
                let latest = AnswerRecord {
                    experience: experience_id.clone(),
                    question: question_id.clone(),
                    answer: answer.clone(),
                    time: t,
                };
                let same_question = |a: &&mut AnswerRecord| {
                    a.experience == latest.experience && a.question == latest.question
                };
                // A newer answer replaces the older; a tie goes to the later write.
                match record.answers.iter_mut().find(same_question) {
                    Some(old) if t >= old.time => *old = latest,
                    Some(_) => {}
                    None => record.answers.push(latest),
                }
                None
            }
        };

        if let Some(kind) = kind {
            let day = time::day_of(self.index.time_zone, t);
            self.set(BitmapKey::EventDay(kind, day), dense, true);
            self.set(BitmapKey::EventAny(kind), dense, true);
            let mut payload: &[u8] = &[];
            if let EventData::Click { broadcast_id } = &event.data {
                let broadcast = broadcast_id.clone();
                self.set(
                    BitmapKey::ClickedBroadcastDay(broadcast.clone(), day),
                    dense,
                    true,
                );
                self.set(BitmapKey::ClickedBroadcast(broadcast), dense, true);
                payload = broadcast_id.as_bytes();
            }
            self.packs.add(kind, t, dense, payload)?;
            self.event_kinds.insert(kind);
            let bounds = self
                .meta
                .event_bounds
                .entry(keys::event_kind_code(kind))
                .or_insert((t, t));
            bounds.0 = bounds.0.min(t);
            bounds.1 = bounds.1.max(t);
        }
        Ok(())
    }

    /// Deletes a customer and all their history; an unknown id is a no-op.
    pub fn delete(&mut self, customer_id: &str) -> Result<()> {
        let Some(dense) = self.lookup(customer_id) else {
            return Ok(());
        };
        self.record_mut(dense)?;
        if let Some(touched) = self.touched.get_mut(&dense) {
            touched.after = None;
        }
        self.summary.deleted += 1;
        self.new_ids.remove(customer_id);
        self.deleted_ids.insert(customer_id.to_owned(), dense);
        // Kept until the change feed has told the customer left, even
        // across a crash.
        self.batch.insert(
            crate::store::feed::departed_key(&self.index.tenant, dense),
            customer_id.as_bytes(),
        );
        self.departed.push((dense, customer_id.to_owned()));
        // Event-day bitmaps are not derived from the record: clear the id everywhere.
        let holding: Vec<BitmapKey> = self
            .index
            .bitmaps
            .iter()
            .filter(|(_, bitmap)| bitmap.contains(dense))
            .map(|(key, _)| key.clone())
            .collect();
        for key in holding {
            self.set(key, dense, false);
        }
        for change in self.bitmaps.values_mut() {
            change.add.remove(dense);
        }
        Ok(())
    }

    /// Makes this batch rewrite every chunk the delta log touched and drop
    /// the log, so that the next start has nothing to replay.
    pub fn checkpoint_now(&mut self) {
        self.force_checkpoint = true;
    }

    /// Writes the batch to disk, atomically and durably.
    pub fn commit(mut self) -> Result<Committed> {
        let tenant = self.index.tenant.clone();
        let customers: RoaringBitmap = self.touched.keys().copied().collect();
        for (dense, touched) in std::mem::take(&mut self.touched) {
            // Most events leave the record as it was (a message or a click
            // after the first event): nothing to derive or store.
            if touched.before == touched.after {
                continue;
            }
            self.derive(dense, touched.before.as_ref(), touched.after.as_ref());
            super::contacts::write_contacts(
                &mut self.batch,
                &tenant,
                dense,
                touched.before.as_ref(),
                touched.after.as_ref(),
            );
            let key = keys::customer_key(&tenant, dense);
            match &touched.after {
                Some(record) => self.batch.insert(key, encode_json(record)?),
                None => self.batch.remove(key),
            }
        }
        self.write_names(&tenant)?;
        let sequence = self.meta.write_sequence;
        std::mem::take(&mut self.packs).write(&mut self.batch, &tenant, sequence);
        if !self.event_ids.is_empty() {
            self.batch.insert(
                keys::event_ids_key(&tenant, sequence),
                event_ids::encode(&self.event_ids)?,
            );
        }
        let forced = self.force_checkpoint
            && !(self.index.delta_log.sequences.is_empty() && self.bitmaps.is_empty());
        let log = if forced {
            checkpoint(&mut self.batch, self.index, &self.bitmaps)?;
            LogUpdate::Checkpointed
        } else if self.bitmaps.is_empty() {
            LogUpdate::Unchanged
        } else {
            let row = delta::encode(
                self.bitmaps
                    .iter()
                    .map(|(key, change)| (key, &change.add, &change.remove)),
            )?;
            let min_bytes = self.store.options().checkpoint_bytes;
            if self.index.delta_log.wants_checkpoint(row.len(), min_bytes) {
                checkpoint(&mut self.batch, self.index, &self.bitmaps)?;
                LogUpdate::Checkpointed
            } else {
                let bytes = row.len();
                self.batch
                    .insert(keys::bitmap_delta_key(&tenant, sequence), row);
                let chunks = self
                    .bitmaps
                    .iter()
                    .map(|(key, change)| (key.clone(), chunks_of(&(&change.add | &change.remove))))
                    .collect();
                LogUpdate::Appended {
                    sequence,
                    bytes,
                    chunks,
                }
            }
        };
        // Always written: the write sequence moves with every batch.
        self.batch
            .insert(keys::meta_key(&tenant), encode_json(&self.meta)?);

        self.store.commit(self.batch)?;
        self.store
            .events_committed(&tenant, sequence, std::mem::take(&mut self.event_ids));
        Ok(Committed {
            meta: self.meta,
            log,
            bitmaps: self.bitmaps,
            new_ids: self.new_ids,
            deleted_ids: self.deleted_ids,
            event_kinds: self.event_kinds,
            customers,
            departed: self.departed,
            summary: self.summary,
        })
    }

    /// The dense id of a customer, allocating one for a customer not seen
    /// before (or deleted since); `true` when it is new.
    fn customer(&mut self, customer_id: &str) -> Result<(u32, bool)> {
        if let Some(dense) = self.lookup(customer_id) {
            return Ok((dense, false));
        }
        let dense = self.meta.next_dense;
        self.meta.next_dense = dense.checked_add(1).ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "tenant `{}` has used all 2^32 customer ids",
                self.index.tenant
            ))
        })?;
        self.new_ids.insert(customer_id.to_owned(), dense);
        self.touched.insert(
            dense,
            Touched {
                before: None,
                after: Some(CustomerRecord::new(customer_id.to_owned(), self.now)),
            },
        );
        Ok((dense, true))
    }

    /// Rewrites the customer-id chunks that new customers fall in (the
    /// newest ones: dense ids only grow), from the live names in memory.
    fn write_names(&mut self, tenant: &str) -> Result<()> {
        let chunks: BTreeSet<u32> = self.new_ids.values().map(|&d| names::chunk_of(d)).collect();
        for chunk in chunks {
            let mut entries: Vec<(u32, &str)> = names::dense_ids(chunk)
                .filter_map(|dense| self.index.ids.name(dense).map(|name| (dense, name)))
                .filter(|(_, name)| !self.deleted_ids.contains_key(*name))
                .collect();
            entries.extend(
                self.new_ids
                    .iter()
                    .filter(|&(_, &dense)| names::chunk_of(dense) == chunk)
                    .map(|(name, &dense)| (dense, name.as_str())),
            );
            let row = names::encode(entries.into_iter())?;
            self.batch.insert(keys::names_key(tenant, chunk), row);
        }
        Ok(())
    }

    fn lookup(&self, customer_id: &str) -> Option<u32> {
        if let Some(&dense) = self.new_ids.get(customer_id) {
            return Some(dense);
        }
        if self.deleted_ids.contains_key(customer_id) {
            return None;
        }
        self.index.ids.get(customer_id)
    }

    /// The record of a live customer, loaded from storage on first touch.
    fn record_mut(&mut self, dense: u32) -> Result<&mut CustomerRecord> {
        if !self.touched.contains_key(&dense) {
            let record = self
                .store
                .customer(&self.index.tenant, dense)?
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "tenant `{}`: no record for live customer {dense}",
                        self.index.tenant
                    ))
                })?;
            self.touched.insert(
                dense,
                Touched {
                    before: Some(record.clone()),
                    after: Some(record),
                },
            );
        }
        self.touched
            .get_mut(&dense)
            .and_then(|touched| touched.after.as_mut())
            .ok_or_else(|| Error::Internal(format!("customer {dense} was deleted in this batch")))
    }

    fn set(&mut self, key: BitmapKey, dense: u32, on: bool) {
        let change = self.bitmaps.entry(key).or_default();
        if on {
            change.add.insert(dense);
            change.remove.remove(dense);
        } else {
            change.remove.insert(dense);
            change.add.remove(dense);
        }
    }

    /// Sets the attribute bitmaps of a customer from its record before and after.
    fn derive(
        &mut self,
        dense: u32,
        before: Option<&CustomerRecord>,
        after: Option<&CustomerRecord>,
    ) {
        let memberships = |record: Option<&CustomerRecord>| -> HashSet<BitmapKey> {
            let mut keys = HashSet::new();
            let Some(record) = record else {
                return keys;
            };
            keys.insert(BitmapKey::Live);
            if record.opted_in {
                keys.insert(BitmapKey::OptedIn);
            }
            if let Some(state) = &record.state {
                keys.insert(BitmapKey::State(state.clone()));
                keys.insert(BitmapKey::Present(PRESENT_STATE));
            }
            if let Some(zone) = &record.time_zone {
                keys.insert(BitmapKey::Timezone(zone.clone()));
                keys.insert(BitmapKey::Present(PRESENT_TIMEZONE));
            }
            for tag in &record.tags {
                keys.insert(BitmapKey::Tag(tag.clone()));
                keys.insert(BitmapKey::Present(PRESENT_TAG));
            }
            for list in &record.klaviyo_lists {
                keys.insert(BitmapKey::KlaviyoList(list.clone()));
                keys.insert(BitmapKey::Present(PRESENT_KLAVIYO_LIST));
            }
            for answer in &record.answers {
                keys.insert(BitmapKey::Answered {
                    experience: answer.experience.clone(),
                    question: answer.question.clone(),
                });
                keys.insert(BitmapKey::Answer {
                    experience: answer.experience.clone(),
                    question: answer.question.clone(),
                    answer: answer.answer.clone(),
                });
            }
            keys
        };
        let old = memberships(before);
        let new = memberships(after);
        for key in old.difference(&new) {
            self.set(key.clone(), dense, false);
        }
        for key in new.difference(&old) {
            self.set(key.clone(), dense, true);
        }

        let numbers = |record: Option<&CustomerRecord>| -> [(NumberAttr, Option<u64>); 5] {
            [
                (NumberAttr::Spent, record.map(|r| r.spent_cents)),
                (NumberAttr::OrderCount, record.map(|r| r.order_count)),
                (
                    NumberAttr::LifetimeSpend,
                    record.and_then(|r| r.lifetime_spend_cents),
                ),
                (
                    NumberAttr::CartValue,
                    record.and_then(|r| r.latest_cart.map(|(_, v)| v)),
                ),
                // Creation times are refused before 1970 at the API.
                (
                    NumberAttr::Created,
                    record.map(|r| r.creation_time().max(0) as u64),
                ),
            ]
        };
        for ((attr, old), (_, new)) in numbers(before).into_iter().zip(numbers(after)) {
            if old == new {
                continue;
            }
            for (bit, on) in bsi::slice_changes(old.unwrap_or(0), new.unwrap_or(0)) {
                self.set(BitmapKey::Slice(attr, bit), dense, on);
            }
            if old.is_some() != new.is_some() {
                self.set(BitmapKey::Exists(attr), dense, new.is_some());
            }
        }
    }
}

impl Committed {
    /// What the change touched, for the change feed: call before `apply`.
    pub fn take_touched(&mut self) -> super::feed::Touched {
        use super::feed::Input;
        let mut inputs: std::collections::HashSet<Input> =
            self.bitmaps.keys().map(Input::of_key).collect();
        inputs.extend(self.event_kinds.iter().map(|&kind| Input::Event(kind)));
        super::feed::Touched {
            inputs,
            everything: false,
            customers: Some(std::mem::take(&mut self.customers)),
            departed: std::mem::take(&mut self.departed).into_iter().collect(),
        }
    }

    /// Applies the durable change to the in-memory index.
    pub fn apply(self, index: &mut TenantIndex) {
        let sequence = self.meta.write_sequence;
        // An event changes what a window reads even when its customer was
        // already in the day's bitmap (the edges of a window read the events).
        for &kind in &self.event_kinds {
            index.versions.bump(Family::Event(kind), sequence);
        }
        for (key, change) in self.bitmaps {
            if let Some(family) = Family::of(&key) {
                index.versions.bump(family, sequence);
            }
            let bitmap = index.bitmaps.entry(key.clone()).or_default();
            *bitmap |= change.add;
            *bitmap -= change.remove;
            if bitmap.is_empty() {
                index.bitmaps.remove(&key);
            }
        }
        for (customer_id, _) in self.deleted_ids {
            index.ids.remove(&customer_id);
        }
        for (customer_id, dense) in self.new_ids {
            index.ids.insert(&customer_id, dense);
        }
        index.meta = self.meta;
        match self.log {
            LogUpdate::Unchanged => {}
            LogUpdate::Appended {
                sequence,
                bytes,
                chunks,
            } => index.delta_log.append(sequence, bytes, &chunks),
            LogUpdate::Checkpointed => index.delta_log = DeltaLog::default(),
        }
    }
}

/// Adds a checkpoint to `batch`: every chunk that the delta log or
/// `changes` touch, written as it will be once `changes` apply, and the
/// removal of every delta row. The caller resets the index's log once the
/// batch is durable.
pub fn checkpoint(
    batch: &mut Batch,
    index: &TenantIndex,
    changes: &HashMap<BitmapKey, BitmapChange>,
) -> Result<()> {
    let tenant = &index.tenant;
    let no_change = BitmapChange::default();
    for (key, chunks) in &index.delta_log.dirty {
        let change = changes.get(key).unwrap_or(&no_change);
        for &chunk in chunks {
            write_chunk(batch, tenant, key, index.bitmap(key), change, chunk)?;
        }
    }
    for (key, change) in changes {
        let logged = index.delta_log.dirty.get(key);
        for chunk in chunks_of(&(&change.add | &change.remove)) {
            if logged.is_none_or(|chunks| !chunks.contains(&chunk)) {
                write_chunk(batch, tenant, key, index.bitmap(key), change, chunk)?;
            }
        }
    }
    for &sequence in &index.delta_log.sequences {
        batch.remove(keys::bitmap_delta_key(tenant, sequence));
    }
    Ok(())
}

/// Writes one chunk of `current` as it will be once `change` applies.
fn write_chunk(
    batch: &mut Batch,
    tenant: &str,
    key: &BitmapKey,
    current: &RoaringBitmap,
    change: &BitmapChange,
    chunk: u16,
) -> Result<()> {
    let (low, high) = chunk_bounds(chunk);
    let mut window = RoaringBitmap::new();
    window.insert_range(low..=high);
    let mut part = current & &window;
    part |= &change.add & &window;
    part -= &change.remove;
    let chunk_key = keys::bitmap_chunk_key(tenant, key, chunk);
    if part.is_empty() {
        batch.remove(chunk_key);
    } else {
        let mut bytes = Vec::with_capacity(part.serialized_size());
        part.serialize_into(&mut bytes)
            .map_err(|error| Error::Internal(format!("serialising a bitmap: {error}")))?;
        batch.insert(chunk_key, bytes);
    }
    Ok(())
}

/// Writes a whole bitmap, a chunk per key.
pub fn write_whole(
    batch: &mut Batch,
    tenant: &str,
    key: &BitmapKey,
    bitmap: &RoaringBitmap,
) -> Result<()> {
    let change = BitmapChange {
        add: bitmap.clone(),
        remove: RoaringBitmap::new(),
    };
    for chunk in chunks_of(bitmap) {
        write_chunk(batch, tenant, key, &RoaringBitmap::new(), &change, chunk)?;
    }
    Ok(())
}

/// Removes every stored chunk of a bitmap.
pub fn remove_whole(batch: &mut Batch, tenant: &str, key: &BitmapKey, bitmap: &RoaringBitmap) {
    for chunk in chunks_of(bitmap) {
        batch.remove(keys::bitmap_chunk_key(tenant, key, chunk));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use roaring::RoaringBitmap;

    use crate::engine::Engine;
    use crate::engine::types::{CustomerUpdate, EventData, NewEvent};
    use crate::store::StoreOptions;
    use crate::store::keys::BitmapKey;

    /// A small deterministic generator, so the test needs no seed crate.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn bitmaps_on_disk(engine: &Engine, tenant: &str) -> HashMap<BitmapKey, RoaringBitmap> {
        engine.store.load_one(tenant).unwrap().unwrap().bitmaps
    }

    fn bitmaps_in_memory(engine: &Engine, tenant: &str) -> HashMap<BitmapKey, RoaringBitmap> {
        let tenant = engine.tenant(tenant).unwrap();
        let index = tenant.index.read().unwrap();
        index.bitmaps.clone()
    }

    /// Every batch either appends a delta row or checkpoints; after each,
    /// what a restart would load equals the index that the writes built in
    /// memory, whatever the threshold (1 byte: every batch checkpoints).
    #[test]
    fn stored_bitmaps_match_the_index_after_every_batch() {
        for checkpoint_bytes in [1, 20_000, 100_000, u64::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let options = StoreOptions {
                checkpoint_bytes,
                ..StoreOptions::default()
            };
            let engine = Engine::open_with(dir.path(), options).unwrap();
            let mut rng = Lcg(checkpoint_bytes);
            let (mut appended, mut checkpointed) = (0, 0);
            for batch in 0..60u64 {
                let now = 1_800_000_000 + batch as i64 * 3_600;
                match rng.below(10) {
                    0 => {
                        let ids: Vec<String> =
                            (0..3).map(|_| format!("c{}", rng.below(200_000))).collect();
                        engine.delete_customers("t", &ids, now).unwrap();
                    }
                    _ if batch % 20 == 19 => {
                        // A new time zone rewrites the day bitmaps: a forced checkpoint.
                        let zone = ["America/New_York", "UTC"][(batch / 20) as usize % 2];
                        engine
                            .set_time_zone("t", zone.parse().unwrap(), now)
                            .unwrap();
                    }
                    1..=4 => {
                        let customers = (0..40)
                            .map(|_| CustomerUpdate {
                                // Ids spread over several 2^16 chunks.
                                customer_id: format!("c{}", rng.below(200_000)),
                                opted_in: Some(rng.below(2) == 0),
                                tags: Some(vec![format!("tag{}", rng.below(5))]),
                                lifetime_spend_cents: Some(rng.below(100_000)),
                                ..Default::default()
                            })
                            .collect();
                        engine.upsert_customers("t", customers, now).unwrap();
                    }
                    _ => {
                        let events = (0..80)
                            .map(|n| NewEvent {
                                event_id: format!("e{batch}-{n}"),
                                customer_id: format!("c{}", rng.below(200_000)),
                                time: now - rng.below(40 * 86_400) as i64,
                                data: match rng.below(3) {
                                    0 => EventData::Order {
                                        value_cents: rng.below(50_000),
                                    },
                                    1 => EventData::Message,
                                    _ => EventData::Click {
                                        broadcast_id: format!("b{}", rng.below(3)),
                                    },
                                },
                            })
                            .collect();
                        engine.record_events("t", events, now).unwrap();
                    }
                }
                let log = {
                    let tenant = engine.tenant("t").unwrap();
                    let index = tenant.index.read().unwrap();
                    index.delta_log.sequences.len()
                };
                if log == 0 {
                    checkpointed += 1;
                } else {
                    appended += 1;
                }
                assert_eq!(
                    bitmaps_on_disk(&engine, "t"),
                    bitmaps_in_memory(&engine, "t"),
                    "checkpoint_bytes {checkpoint_bytes}, after batch {batch}"
                );
            }
            match checkpoint_bytes {
                1 => assert_eq!(appended, 0),
                u64::MAX => assert!(appended > 40, "{appended} batches appended"),
                _ => assert!(
                    appended > 0 && checkpointed > 0,
                    "{appended}/{checkpointed}"
                ),
            }
        }
    }

    fn count(engine: &Engine, rule: &str, instant: i64) -> u64 {
        let audience = crate::engine::types::Audience::Rule(crate::rule::parse(rule).unwrap());
        engine.count("t", &audience, instant).unwrap()
    }

    fn order(id: &str, customer: &str, time: i64) -> NewEvent {
        NewEvent {
            event_id: id.to_owned(),
            customer_id: customer.to_owned(),
            time,
            data: EventData::Order { value_cents: 500 },
        }
    }

    /// Counts read cached clause results; each write that changes what a
    /// clause reads must make its next count see the change, including an
    /// order that changes no bitmap (its customer already ordered that day)
    /// but falls inside a window's edge.
    #[test]
    fn cached_clauses_follow_the_writes_they_read() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        // 2026-06-15T12:00:00Z.
        let noon = 1_781_524_800;
        let customers = (0..4000)
            .map(|i| CustomerUpdate {
                customer_id: format!("c{i}"),
                lifetime_spend_cents: (i % 2 == 0).then_some(i * 10),
                ..CustomerUpdate::default()
            })
            .collect();
        engine.upsert_customers("t", customers, noon).unwrap();
        let events = vec![
            order("o1", "c1", noon - 10 * 3600),
            order("o2", "c2", noon - 1),
        ];
        engine.record_events("t", events, noon).unwrap();

        let window = "ordered WITHIN 2h";
        assert_eq!(count(&engine, window, noon), 1);
        assert_eq!(count(&engine, window, noon), 1);
        // Same day, same bitmaps, within the known bounds: only the edge read sees it.
        engine
            .record_events("t", vec![order("o3", "c1", noon - 3600)], noon)
            .unwrap();
        assert_eq!(count(&engine, window, noon), 2);

        // Even customers c0, c2, ... have 10 × i cents: at least 20,000 is i >= 2000.
        let spend = "lifetime_spend >= 200";
        assert_eq!(count(&engine, spend, noon), 1000);
        let messages = (0..50)
            .map(|n| NewEvent {
                event_id: format!("m{n}"),
                customer_id: format!("c{n}"),
                time: noon - n,
                data: EventData::Message,
            })
            .collect();
        engine.record_events("t", messages, noon).unwrap();
        assert_eq!(count(&engine, spend, noon), 1000);
        let rich = CustomerUpdate {
            customer_id: "c1".to_owned(),
            lifetime_spend_cents: Some(1_000_000),
            ..CustomerUpdate::default()
        };
        engine.upsert_customers("t", vec![rich], noon).unwrap();
        assert_eq!(count(&engine, spend, noon), 1001);

        // Spent is 0 without orders, so a new customer joins `spent < 1`.
        let none_spent = "spent < 1";
        assert_eq!(count(&engine, none_spent, noon), 3998);
        let new = CustomerUpdate {
            customer_id: "new".to_owned(),
            ..CustomerUpdate::default()
        };
        engine.upsert_customers("t", vec![new], noon).unwrap();
        assert_eq!(count(&engine, none_spent, noon), 3999);
        engine
            .delete_customers("t", &["c2".to_owned()], noon)
            .unwrap();
        assert_eq!(count(&engine, none_spent, noon), 3999);
        assert_eq!(count(&engine, window, noon), 1);
        assert_eq!(count(&engine, spend, noon), 1001);
    }
}
