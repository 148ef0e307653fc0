//! Keeping the members: evaluating segments again after writes, edits and
//! ticks, storing the differences as entries, publishing them once durable,
//! pruning old entries, and recovering at start.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use roaring::RoaringBitmap;

use super::dependencies::{Dependencies, Scope, Touched};
use super::{FeedState, MAX_IDS_PER_ENTRY, Start};
use crate::engine::{Engine, Tenant, read, tenant_name};
use crate::error::Result;
use crate::index::TenantIndex;
use crate::index::eval::Evaluation;
use crate::store::Batch;
use crate::store::feed::{self as stored, ChangeCause, FeedEntry, MembersCheckpoint};
use crate::time::Seconds;

/// How one segment's members moved.
struct Moved {
    segment_id: String,
    entered: RoaringBitmap,
    left: RoaringBitmap,
}

impl Engine {
    /// Evaluates `segment_ids` again and stores, as new entries, how their
    /// members moved. Called with the tenant's writer lock held, after the
    /// index shows the change; returns the new head if entries were made.
    pub(crate) fn feed_refresh(
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
        let mut state = tenant.feed.lock();
        // Instants never go back: a tick that waited for a write's lock
        // evaluates at the write's instant at least.
        let instant = now.max(state.last_instant);
        state.last_instant = instant;
        // The caller's deadline does not apply: the write is already durable.
        let outcome = crate::cancel::Cancel::default()
            .run(|| self.feed_diff(&index, &mut state, segment_ids, scope, cause, instant));
        match outcome {
            Ok(head) => head,
            Err(error) => {
                // The next tick evaluates these segments over everyone.
                tracing::error!(tenant = index.tenant, %error, "change feed not updated");
                state.stale.extend(segment_ids.iter().cloned());
                None
            }
        }
    }

    fn feed_diff(
        &self,
        index: &TenantIndex,
        state: &mut FeedState,
        segment_ids: &BTreeSet<String>,
        scope: Scope<'_>,
        cause: ChangeCause,
        instant: Seconds,
    ) -> Result<Option<u64>> {
        let evaluation = Evaluation::new(index, &self.store, instant);
        let among = scope.touched.and_then(|touched| touched.customers.as_ref());
        let mut moves = Vec::new();
        for segment_id in segment_ids {
            if !index.segments.contains_key(segment_id) {
                continue;
            }
            let empty = RoaringBitmap::new();
            let before = state.members.get(segment_id).unwrap_or(&empty);
            let (entered, left) = match among {
                // Only they can have moved: a membership reads the
                // customer's own data alone.
                Some(customers) => {
                    let was = before & customers;
                    let now_in = evaluation.segment_among(segment_id, customers)?;
                    (&now_in - &was, was - now_in)
                }
                None => {
                    let now_in = evaluation.segment(segment_id)?;
                    (&now_in - before, before - &now_in)
                }
            };
            if !entered.is_empty() || !left.is_empty() {
                moves.push(Moved {
                    segment_id: segment_id.clone(),
                    entered,
                    left,
                });
            }
        }
        if moves.is_empty() {
            return Ok(None);
        }

        let no_one = HashMap::new();
        let departed = scope.touched.map_or(&no_one, |touched| &touched.departed);
        let mut batch = Batch::default();
        let mut head = state.head;
        let mut stored_members = Vec::new();
        for moved in &moves {
            let told = entries(
                index, departed, moved, cause, instant, &mut head, &mut batch,
            )?;
            let since = state
                .since_checkpoint
                .get(&moved.segment_id)
                .copied()
                .unwrap_or(0)
                + told;
            let kept = state.members.get(&moved.segment_id);
            // Keep the replay at start shorter than the members themselves;
            // only then are they copied.
            if since > 10_000 + kept.map_or(0, RoaringBitmap::len) {
                let mut members = kept.cloned().unwrap_or_default();
                members |= &moved.entered;
                members -= &moved.left;
                stored_members.push(moved.segment_id.clone());
                let row = MembersCheckpoint {
                    segment_id: moved.segment_id.clone(),
                    // Every entry of this segment so far is at or below it.
                    sequence: head,
                    members,
                };
                stored::put_members(&mut batch, &index.tenant, &row)?;
            }
        }
        stored::put_head(&mut batch, &index.tenant, head);
        self.store.apply_unflushed(batch)?;

        state.head = head;
        state.head_stored = true;
        for moved in moves {
            let told = moved.entered.len() + moved.left.len();
            let kept = state.members.entry(moved.segment_id.clone()).or_default();
            *kept |= moved.entered;
            *kept -= moved.left;
            let since = state
                .since_checkpoint
                .entry(moved.segment_id.clone())
                .or_default();
            *since = if stored_members.contains(&moved.segment_id) {
                0
            } else {
                *since + told
            };
        }
        Ok(Some(head))
    }

    /// Makes the feed durable up to `head` and shows it to watchers; a
    /// failure leaves the entries unshown (a later flush shows them).
    pub(crate) fn feed_publish(&self, tenant: &Tenant, head: Option<u64>) {
        if let Some(head) = head
            && let Err(error) = self.feed_flush_and_publish(tenant, head)
        {
            tracing::error!(tenant = tenant_name(tenant), %error, "change feed not flushed");
        }
    }

    /// Lets go of the tenant's writer lock, then publishes `head`: the
    /// flush waits outside the lock.
    pub(crate) fn feed_publish_after(
        &self,
        tenant: &Tenant,
        writer: MutexGuard<'_, ()>,
        head: Option<u64>,
    ) {
        drop(writer);
        self.feed_publish(tenant, head);
    }

    pub(super) fn feed_flush_and_publish(&self, tenant: &Tenant, head: u64) -> Result<()> {
        self.store.sync()?;
        tenant.feed.published.send_if_modified(|published| {
            let moved = head > *published;
            *published = (*published).max(head);
            moved
        });
        Ok(())
    }

    /// After a durable write: tells the segments that read what it touched.
    pub(crate) fn feed_after_write(
        &self,
        tenant: &Tenant,
        touched: &Touched,
        now: Seconds,
    ) -> Option<u64> {
        let affected = tenant.feed.lock().dependencies.affected(touched);
        let scope = Scope {
            touched: Some(touched),
        };
        self.feed_refresh(tenant, &affected, scope, ChangeCause::Write, now)
    }

    /// After a segment was saved: rebuilds the dependency index and tells
    /// the segment and those that refer to it.
    pub(crate) fn feed_after_segment_edit(
        &self,
        tenant: &Tenant,
        segment_id: &str,
        now: Seconds,
    ) -> Option<u64> {
        let affected = {
            let index = read(&tenant.index);
            let mut state = tenant.feed.lock();
            state.dependencies = Dependencies::build(&index);
            state.dependencies.readers_of(segment_id)
        };
        let scope = Scope::EVERYONE;
        self.feed_refresh(tenant, &affected, scope, ChangeCause::SegmentEdit, now)
    }

    /// After a failed write was undone by reloading the index: the feed
    /// may have missed it, so every segment is evaluated at the next tick.
    pub(crate) fn feed_mark_stale(&self, tenant: &Tenant) {
        let all: Vec<String> = read(&tenant.index).segments.keys().cloned().collect();
        tenant.feed.lock().stale.extend(all);
    }

    /// Moves every tenant's relative windows to `now`, evaluates segments
    /// whose refresh failed, and prunes entries older than `retention`
    /// seconds.
    pub fn feed_tick(&self, now: Seconds, retention: Seconds) {
        for tenant in self.stored_tenants() {
            let head = {
                let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
                let (timed, stale) = {
                    let mut state = tenant.feed.lock();
                    (
                        state.dependencies.timed.clone(),
                        std::mem::take(&mut state.stale),
                    )
                };
                if timed.is_empty() && stale.is_empty() {
                    if let Err(error) = self.feed_prune(&tenant, now, retention) {
                        tracing::error!(tenant = tenant_name(&tenant), %error, "change feed not pruned");
                    }
                    continue;
                }
                // A failed refresh may still hold deleted customers.
                let touched = self.everyone_named(&tenant).unwrap_or_else(|error| {
                    tracing::error!(tenant = tenant_name(&tenant), %error, "departed rows");
                    Touched::default()
                });
                let everyone = Scope {
                    touched: Some(&touched),
                };
                let timed = self.feed_refresh(&tenant, &timed, everyone, ChangeCause::Time, now);
                let stale =
                    self.feed_refresh(&tenant, &stale, everyone, ChangeCause::Recovery, now);
                if let Err(error) = self.feed_prune(&tenant, now, retention) {
                    tracing::error!(tenant = tenant_name(&tenant), %error, "change feed not pruned");
                }
                stale.or(timed)
            };
            self.feed_publish(&tenant, head);
        }
    }

    /// Everyone, with the merchant ids of the customers deleted since the
    /// members were last stored, as their deletes wrote them.
    fn everyone_named(&self, tenant: &Tenant) -> Result<Touched> {
        Ok(Touched {
            everything: true,
            departed: self
                .store
                .feed_departed(&tenant_name(tenant))?
                .into_iter()
                .collect(),
            ..Touched::default()
        })
    }

    /// Removes entries older than `retention`, at most once per tenth of
    /// it (and at least once an hour), first storing every segment's
    /// members so that a start never needs a pruned entry.
    fn feed_prune(&self, tenant: &Tenant, now: Seconds, retention: Seconds) -> Result<()> {
        let every = (retention / 10).clamp(0, 3_600);
        {
            let mut state = tenant.feed.lock();
            if now.saturating_sub(state.last_prune) < every {
                return Ok(());
            }
            state.last_prune = now;
        }
        let index = read(&tenant.index);
        let before = now.saturating_sub(retention);
        let head = tenant.feed.lock().head;
        let Some(cut) = self.store.feed_prune_point(&index.tenant, head, before)? else {
            return Ok(());
        };
        self.feed_store_members(&index, &mut tenant.feed.lock())?;
        self.store.sync()?;
        // Readers see the new floor before the entries go.
        tenant.feed.floor.fetch_max(cut, Ordering::AcqRel);
        self.store.feed_remove_through(&index.tenant, cut)?;
        Ok(())
    }

    /// Stores every segment's members as of the head (not flushed), and
    /// forgets the departed customers it no longer needs to name.
    fn feed_store_members(&self, index: &TenantIndex, state: &mut FeedState) -> Result<()> {
        let mut batch = Batch::default();
        let empty = RoaringBitmap::new();
        // Every segment, those with no members too: a start after a clean
        // stop finds every segment stored at the head.
        for segment_id in index.segments.keys() {
            let row = MembersCheckpoint {
                segment_id: segment_id.clone(),
                sequence: state.head,
                members: state.members.get(segment_id).unwrap_or(&empty).clone(),
            };
            stored::put_members(&mut batch, &index.tenant, &row)?;
        }
        // A deleted customer no kept members hold needs no name any more.
        for (dense, _) in self.store.feed_departed(&index.tenant)? {
            if !state
                .members
                .values()
                .any(|members| members.contains(dense))
            {
                batch.remove(stored::departed_key(&index.tenant, dense));
            }
        }
        stored::put_head(&mut batch, &index.tenant, state.head);
        self.store.apply_unflushed(batch)?;
        state.head_stored = true;
        state.since_checkpoint.clear();
        Ok(())
    }

    /// Stores every tenant's feed members and marks the stop clean, so that
    /// the next start evaluates nothing; a clean shutdown calls it last
    /// before its flush. A feed that missed a change is not marked.
    pub fn feed_checkpoint_all(&self) -> Result<()> {
        // Every writer held until the mark is down: a write still running
        // past its caller's deadline cannot slip in between.
        let mut tenants = self.stored_tenants();
        tenants.sort_by_key(|tenant| tenant_name(tenant));
        let writers: Vec<_> = tenants
            .iter()
            .map(|tenant| tenant.writer.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let mut clean = true;
        for tenant in &tenants {
            let index = read(&tenant.index);
            let mut state = tenant.feed.lock();
            clean &= state.stale.is_empty();
            self.feed_store_members(&index, &mut state)?;
        }
        if clean {
            let mut batch = Batch::default();
            stored::put_clean_mark(&mut batch, self.store.commit_count());
            self.store.apply_unflushed(batch)?;
        }
        drop(writers);
        Ok(())
    }

    /// At start: takes a new feed's members as they are, and tells, as
    /// `Recovery` entries, what a stored feed missed. The clean-stop mark
    /// is used up.
    pub(crate) fn feed_recover(&self, now: Seconds) -> Result<()> {
        for tenant in self.stored_tenants() {
            let head = {
                let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
                let start = tenant.feed.lock().start;
                let index = read(&tenant.index);
                let all: BTreeSet<String> = index.segments.keys().cloned().collect();
                match start {
                    Start::Clean => None,
                    Start::Fresh => {
                        let evaluation = Evaluation::new(&index, &self.store, now);
                        let mut state = tenant.feed.lock();
                        for segment_id in &all {
                            match evaluation.segment(segment_id) {
                                Ok(members) => {
                                    state.members.insert(segment_id.clone(), members);
                                }
                                // Evaluated over everyone at the first tick.
                                Err(error) => {
                                    tracing::error!(tenant = index.tenant, %error, "feed start");
                                    state.stale.insert(segment_id.clone());
                                }
                            }
                        }
                        if state.stale.is_empty() {
                            self.feed_store_members(&index, &mut state)?;
                        }
                        None
                    }
                    Start::Unclean => {
                        // Customers deleted by writes whose entries were lost
                        // are named from their delete's own row.
                        drop(index);
                        let touched = self.everyone_named(&tenant)?;
                        let scope = Scope {
                            touched: Some(&touched),
                        };
                        self.feed_refresh(&tenant, &all, scope, ChangeCause::Recovery, now)
                    }
                }
            };
            self.feed_publish(&tenant, head);
        }
        let mut batch = Batch::default();
        stored::remove_clean_mark(&mut batch);
        self.store.apply_unflushed(batch)?;
        self.store.sync()
    }
}

/// Adds the entries of one segment's move to `batch`, numbered after
/// `head`, at most `MAX_IDS_PER_ENTRY` ids each; returns the ids told.
fn entries(
    index: &TenantIndex,
    departed: &HashMap<u32, String>,
    moved: &Moved,
    cause: ChangeCause,
    instant: Seconds,
    head: &mut u64,
    batch: &mut Batch,
) -> Result<u64> {
    let mut unnamed = 0u64;
    let mut name = |dense: u32| -> (u32, String) {
        let id = index
            .customer_id(dense)
            .map(str::to_owned)
            .or_else(|| departed.get(&dense).cloned())
            .unwrap_or_else(|| {
                unnamed += 1;
                String::new()
            });
        (dense, id)
    };
    let mut entered: Vec<_> = moved.entered.iter().map(&mut name).collect();
    let mut left: Vec<_> = moved.left.iter().map(&mut name).collect();
    if unnamed > 0 {
        tracing::error!(
            tenant = index.tenant,
            segment = moved.segment_id,
            unnamed,
            "customers told without their id"
        );
    }

    let told = (entered.len() + left.len()) as u64;
    entered.reverse();
    left.reverse();
    while !entered.is_empty() || !left.is_empty() {
        let take_entered = entered.len().min(MAX_IDS_PER_ENTRY);
        let part_entered: Vec<_> = entered.split_off(entered.len() - take_entered);
        let room = MAX_IDS_PER_ENTRY - part_entered.len();
        let part_left: Vec<_> = left.split_off(left.len() - left.len().min(room));
        *head += 1;
        let entry = FeedEntry {
            segment_id: moved.segment_id.clone(),
            cause,
            time: instant,
            entered: part_entered.into_iter().rev().collect(),
            left: part_left.into_iter().rev().collect(),
        };
        stored::put_entry(batch, &index.tenant, *head, &entry)?;
    }
    Ok(told)
}
