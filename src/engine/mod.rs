//! The engine: every tenant's index in memory over one sled store, with the
//! operations the service offers, free of any gRPC type.
//!
//! Reads take a tenant's index under a read lock. Writes to one tenant are
//! serialised by its writer lock: a write plans against the index, commits
//! to disk, and only then takes the index's write lock to apply the change,
//! so a read never waits on a disk flush and never sees an unacknowledged write.

pub mod audience;
pub mod contacts;
pub mod explain;
pub mod feed;
pub mod lifecycle;
pub mod segments;
pub mod snapshots;
pub mod tenants;
pub mod types;
pub mod write;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::index::eval::Evaluation;
use crate::store::records::TenantMeta;
use crate::store::{Store, StoreOptions};
use crate::time::Seconds;
use types::{Audience, AudiencePage, CustomerUpdate, NewEvent, WriteSummary};
use write::WriteBatch;

/// The time zone of a tenant that has not set one.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// One tenant: its index and the lock that serialises its writers.
pub struct Tenant {
    writer: Mutex<()>,
    index: RwLock<TenantIndex>,
    /// False until the tenant's first write is on disk.
    stored: AtomicBool,
    /// Every saved segment's members as last told, and the feed's numbers.
    feed: feed::Feed,
}

/// Facts about a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInfo {
    pub time_zone: String,
    pub customer_count: u64,
    pub segment_count: u64,
}

/// All tenants over one store.
pub struct Engine {
    store: Store,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    /// Held while a tenant is created by name, so that one of two racing
    /// creations is told the tenant exists.
    creating: Mutex<()>,
}

impl Engine {
    /// Opens the data directory and loads every tenant.
    pub fn open(path: &Path) -> Result<Engine> {
        Engine::open_with(path, StoreOptions::default())
    }

    /// Opens the data directory with `options` and loads every tenant.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Engine> {
        Engine::open_at(path, options, chrono::Utc::now().timestamp())
    }

    /// Opens the data directory with `options` and loads every tenant; the
    /// change feed tells what it missed as of `now`.
    pub fn open_at(path: &Path, options: StoreOptions, now: Seconds) -> Result<Engine> {
        let store = Store::open_with(path, options)?;
        let stopped_clean = store.feed_clean_mark()? == Some(store.commit_count());
        let mut tenants = HashMap::new();
        for mut snapshot in store.load()? {
            if !snapshot.meta.contacts_indexed {
                contacts::backfill(&store, &mut snapshot.meta, &snapshot.tenant)?;
            }
            let index = TenantIndex::from_snapshot(snapshot)?;
            let feed = feed::Feed::load(&store, &index, stopped_clean)?;
            let tenant = Tenant {
                writer: Mutex::new(()),
                index: RwLock::new(index),
                stored: true.into(),
                feed,
            };
            tenants.insert(tenant_name(&tenant), Arc::new(tenant));
        }
        let engine = Engine {
            store,
            tenants: RwLock::new(tenants),
            creating: Mutex::new(()),
        };
        engine.feed_recover(now)?;
        Ok(engine)
    }

    /// How many tenants are loaded.
    pub fn tenant_count(&self) -> usize {
        read(&self.tenants).len()
    }

    /// Sets the function told how long each commit to disk takes.
    pub fn observe_commits(&self, observer: crate::store::CommitObserver) {
        self.store.observe_commits(observer);
    }

    /// Flushes everything to disk; called on shutdown.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    /// Creates or updates customers, atomically and durably.
    pub fn upsert_customers(
        &self,
        tenant: &str,
        customers: Vec<CustomerUpdate>,
        now: Seconds,
    ) -> Result<WriteSummary> {
        self.write(tenant, now, |batch| {
            customers
                .into_iter()
                .try_for_each(|customer| batch.upsert(customer))
        })
    }

    /// Records events, atomically and durably; seen event ids change nothing.
    pub fn record_events(
        &self,
        tenant: &str,
        events: Vec<NewEvent>,
        now: Seconds,
    ) -> Result<WriteSummary> {
        self.write(tenant, now, |batch| {
            events.into_iter().try_for_each(|event| batch.record(event))
        })
    }

    /// Deletes customers and their history; unknown ids are no-ops.
    pub fn delete_customers(
        &self,
        tenant: &str,
        customer_ids: &[String],
        now: Seconds,
    ) -> Result<WriteSummary> {
        if self.tenant(tenant).is_err() {
            return Ok(WriteSummary::default());
        }
        self.write(tenant, now, |batch| {
            customer_ids
                .iter()
                .try_for_each(|customer_id| batch.delete(customer_id))
        })
    }

    /// Folds every tenant's delta log into its stored bitmaps, so that the
    /// next start replays nothing; a clean shutdown calls it.
    pub fn checkpoint_all(&self, now: Seconds) -> Result<usize> {
        let names: Vec<String> = read(&self.tenants).keys().cloned().collect();
        let mut folded = 0;
        for name in names {
            let Ok(tenant) = self.tenant(&name) else {
                continue;
            };
            if read(&tenant.index).delta_log.sequences.is_empty() {
                continue;
            }
            self.write(&name, now, |batch| {
                batch.checkpoint_now();
                Ok(())
            })?;
            folded += 1;
        }
        self.feed_checkpoint_all()?;
        Ok(folded)
    }

    fn write(
        &self,
        name: &str,
        now: Seconds,
        plan: impl FnOnce(&mut WriteBatch) -> Result<()>,
    ) -> Result<WriteSummary> {
        let tenant = self.tenant_or_create(name, now)?;
        // The writer lock guards no data: a panic that poisoned it left nothing half done.
        let writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let new_tenant = !tenant.stored.load(Ordering::Acquire);
        let committed = {
            let index = read(&tenant.index);
            let mut batch = WriteBatch::new(&index, &self.store, now);
            plan(&mut batch).and_then(|()| batch.commit())
        };
        let mut committed = match committed {
            Ok(committed) => committed,
            Err(error) => {
                self.recover(name, &tenant, new_tenant, &error);
                return Err(error);
            }
        };

        let summary = committed.summary;
        let touched = committed.take_touched();
        let mut index = tenant.index.write().unwrap_or_else(PoisonError::into_inner);
        committed.apply(&mut index);
        drop(index);
        tenant.stored.store(true, Ordering::Release);
        let head = self.feed_after_write(&tenant, &touched, now);
        self.feed_publish_after(&tenant, writer, head);
        Ok(summary)
    }

    /// Brings a tenant back in line with storage after a failed write. A
    /// storage fault may leave the batch on disk or not, so the index is
    /// reloaded from disk; a tenant whose first write failed is forgotten.
    fn recover(&self, name: &str, tenant: &Tenant, new_tenant: bool, error: &Error) {
        let storage_fault = error.is_internal();
        if !storage_fault {
            if new_tenant {
                self.forget(name);
            }
            return;
        }
        tracing::error!(tenant = name, %error, "write failed; reloading the tenant from storage");
        let reloaded = self
            .store
            .load_one(name)
            .and_then(|snapshot| snapshot.map(TenantIndex::from_snapshot).transpose());
        match reloaded {
            Ok(Some(index)) => {
                *tenant.index.write().unwrap_or_else(PoisonError::into_inner) = index;
                tenant.stored.store(true, Ordering::Release);
                // The write may have landed: the feed looks again.
                self.feed_mark_stale(tenant);
            }
            Ok(None) => self.forget(name),
            Err(error) => tracing::error!(tenant = name, %error, "cannot reload the tenant"),
        }
    }

    /// Drops a tenant that has nothing on disk.
    fn forget(&self, name: &str) {
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if tenants
            .get(name)
            .is_some_and(|tenant| !tenant.stored.load(Ordering::Acquire))
        {
            tenants.remove(name);
        }
    }

    /// The members of an audience.
    pub fn members(
        &self,
        tenant: &str,
        audience: &Audience,
        instant: Seconds,
    ) -> Result<RoaringBitmap> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        self.evaluate(&index, audience, instant)
    }

    /// The number of members of an audience.
    pub fn count(&self, tenant: &str, audience: &Audience, instant: Seconds) -> Result<u64> {
        Ok(self.members(tenant, audience, instant)?.len())
    }

    /// A page of an audience's customer ids, in dense-id order, after the
    /// dense id `after` (from the previous page).
    pub fn page(
        &self,
        tenant: &str,
        audience: &Audience,
        instant: Seconds,
        after: Option<u32>,
        page_size: usize,
    ) -> Result<AudiencePage> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let members = self.evaluate(&index, audience, instant)?;
        let start = after.map_or(Some(0), |last| last.checked_add(1));
        let mut customer_ids = Vec::with_capacity(page_size.min(members.len() as usize));
        let mut last = None;
        let mut more = false;
        if let Some(start) = start {
            for dense in members.range(start..) {
                if customer_ids.len() == page_size {
                    more = true;
                    break;
                }
                let customer_id = index.customer_id(dense).ok_or_else(|| {
                    Error::Internal(format!("live customer {dense} has no customer id"))
                })?;
                customer_ids.push(customer_id.to_owned());
                last = Some(dense);
            }
        }
        Ok(AudiencePage {
            customer_ids,
            total_count: members.len(),
            resume_after: if more { last } else { None },
        })
    }

    /// Facts about a tenant.
    pub fn tenant_info(&self, tenant: &str) -> Result<TenantInfo> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        Ok(TenantInfo {
            time_zone: index.meta.time_zone.clone(),
            customer_count: index.live().len(),
            segment_count: index.segments.len() as u64,
        })
    }

    fn evaluate(
        &self,
        index: &TenantIndex,
        audience: &Audience,
        instant: Seconds,
    ) -> Result<RoaringBitmap> {
        self.evaluate_with(&Evaluation::new(index, &self.store, instant), audience)
    }

    /// The live members of an audience, within an evaluation that may be
    /// shared by several audiences.
    fn evaluate_with(&self, evaluation: &Evaluation, audience: &Audience) -> Result<RoaringBitmap> {
        match audience {
            Audience::Rule(rule) => evaluation.rule(rule),
            Audience::Segment(segment_id) => evaluation.segment(segment_id),
            Audience::Snapshot(snapshot_id) => {
                let index = evaluation.index;
                if !index.snapshots.contains_key(snapshot_id) {
                    return Err(Error::NotFound(format!(
                        "snapshot `{snapshot_id}` not found"
                    )));
                }
                let mut members = self.store.snapshot_members(&index.tenant, snapshot_id)?;
                members &= index.live();
                Ok(members)
            }
        }
    }

    /// A stored tenant, or `NOT_FOUND`.
    fn tenant(&self, name: &str) -> Result<Arc<Tenant>> {
        read(&self.tenants)
            .get(name)
            .filter(|tenant| tenant.stored.load(Ordering::Acquire))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("tenant `{name}` not found")))
    }

    fn tenant_or_create(&self, name: &str, now: Seconds) -> Result<Arc<Tenant>> {
        if let Some(tenant) = read(&self.tenants).get(name) {
            return Ok(tenant.clone());
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(tenant) = tenants.get(name) {
            return Ok(tenant.clone());
        }
        let meta = TenantMeta {
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
            next_dense: 0,
            event_bounds: Default::default(),
            create_time: now,
            write_sequence: 0,
            contacts_indexed: true,
        };
        let tenant = Arc::new(Tenant {
            writer: Mutex::new(()),
            index: RwLock::new(TenantIndex::new(name.to_owned(), meta)?),
            stored: false.into(),
            feed: feed::Feed::empty(),
        });
        tenants.insert(name.to_owned(), tenant.clone());
        Ok(tenant)
    }
}

pub(crate) fn tenant_name(tenant: &Tenant) -> String {
    read(&tenant.index).tenant.clone()
}

/// Takes a read lock; a poisoned lock still holds a consistent index,
/// because the index is only changed after a write has fully succeeded.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}
