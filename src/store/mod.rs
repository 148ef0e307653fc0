//! sled-backed storage: opening and checking a data directory, loading every
//! tenant at start, and atomic, durable batches.
//!
//! One sled tree holds everything (see `keys` for the layout). A write
//! becomes one `sled::Batch`, applied atomically and flushed to disk before
//! the caller is answered.

pub mod delta;
pub mod event_ids;
pub mod feed;
pub mod history;
pub mod keys;
mod manifest;
pub mod names;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::index::ids::CustomerIds;
use crate::rule::EventKind;
use crate::time::{Seconds, TimeRange};
use delta::DeltaLog;
use keys::{BitmapKey, FORMAT_KEY, FORMAT_VERSION, FORMAT_VERSION_1, FORMAT_VERSION_2};
use records::{CustomerRecord, SegmentRecord, SnapshotRecord, TenantMeta};

/// One atomic change: every insert and removal in it is applied, or none.
#[derive(Default)]
pub struct Batch(sled::Batch);

impl Batch {
    pub fn insert(&mut self, key: Vec<u8>, value: impl AsRef<[u8]>) {
        self.0.insert(key, value.as_ref());
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.0.remove(key);
    }
}

/// How storage behaves; `Default` is what `segmentd serve` uses unless told.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// The bytes of bitmap delta rows a tenant may gather before a write
    /// checkpoints them (at least; see `delta::DeltaLog::wants_checkpoint`).
    pub checkpoint_bytes: u64,
    /// Bytes of sled's page cache (its default is 1 GiB).
    pub cache_bytes: u64,
}

/// sled's page cache unless told otherwise: enough for the hot customer
/// records of an import; the index itself lives outside it.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            checkpoint_bytes: delta::DEFAULT_CHECKPOINT_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// The data directory. Everything segmentd stores goes through this type,
/// so another embedded engine could replace sled without touching the index.
pub struct Store {
    db: sled::Db,
    path: std::path::PathBuf,
    options: StoreOptions,
    /// Numbers commits in the order they are applied.
    commits: Mutex<u64>,
    /// When the manifest was last written, and the commits it then vouched for.
    manifest: Mutex<(Instant, u64)>,
    /// Event ids of committed batches on their way to `E` rows.
    event_ids: event_ids::EventIds,
    /// Told how long each commit took, for metrics.
    on_commit: std::sync::OnceLock<CommitObserver>,
}

/// A function told the time each commit took, to its flush.
pub type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// The key of the database's own count of commits.
const COMMITS_KEY: &[u8] = b"\0commits";
/// How often, at most, a commit also rewrites the manifest.
const MANIFEST_EVERY: Duration = Duration::from_secs(1);

/// Everything stored of one tenant, as read at start.
pub struct TenantSnapshot {
    pub tenant: String,
    pub meta: TenantMeta,
    /// Live customers: their ids and dense ids.
    pub customers: CustomerIds,
    pub bitmaps: HashMap<BitmapKey, RoaringBitmap>,
    /// The delta rows replayed into `bitmaps`.
    pub delta_log: DeltaLog,
    pub segments: Vec<SegmentRecord>,
    pub snapshots: Vec<SnapshotRecord>,
}

impl Store {
    /// Opens (or creates) the data directory and checks that it holds
    /// segmentd data of a format this build reads.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the data directory with `options`.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store> {
        let started = Instant::now();
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(|error| match error {
                // sled reports the lock it cannot take in its message.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    Error::FailedPrecondition(format!(
                        "{} is in use by another segmentd process",
                        path.display()
                    ))
                }
                error => Error::Corrupt(format!("cannot open {}: {error}", path.display())),
            })?;
        tracing::debug!(
            millis = started.elapsed().as_millis() as u64,
            resident_mib = resident_mib(),
            "sled open"
        );
        let fresh = db.is_empty();
        match db.get(FORMAT_KEY)? {
            Some(version) if version.as_ref() == FORMAT_VERSION => {
                // An upgrade stopped before it removed all the `X` rows.
                if db.scan_prefix([keys::TAG_EXTERNAL_ID]).next().is_some() {
                    remove_external_ids(&db)?;
                }
            }
            Some(version)
                if version.as_ref() == FORMAT_VERSION_1 || version.as_ref() == FORMAT_VERSION_2 =>
            {
                // Version 2 added delta rows, version 3 customer-id chunks;
                // an older build must not read either.
                let started = Instant::now();
                let customers = upgrade_names(&db)?;
                db.insert(FORMAT_KEY, FORMAT_VERSION)?;
                db.flush()?;
                remove_external_ids(&db)?;
                tracing::info!(
                    data = %path.display(),
                    customers,
                    millis = started.elapsed().as_millis() as u64,
                    "storage format upgraded to version 3"
                );
            }
            Some(version) => {
                return Err(Error::Corrupt(format!(
                    "{} holds storage format `{}`; this build reads `{}`",
                    path.display(),
                    String::from_utf8_lossy(&version),
                    String::from_utf8_lossy(FORMAT_VERSION)
                )));
            }
            None if db.is_empty() => {
                db.insert(FORMAT_KEY, FORMAT_VERSION)?;
                db.flush()?;
            }
            None => {
                return Err(Error::Corrupt(format!(
                    "{} is not a segmentd data directory (no format marker)",
                    path.display()
                )));
            }
        }

        let commits = match db.get(COMMITS_KEY)? {
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                Error::Corrupt(format!("{}: the commit count is damaged", path.display()))
            })?),
            None => 0,
        };
        match manifest::read(path)? {
            Some(vouched) if vouched > commits => {
                return Err(Error::Corrupt(format!(
                    "{} has lost committed writes: the database holds {commits} commits but \
                     {vouched} were on disk before; restore the directory from a backup",
                    path.display()
                )));
            }
            None if !fresh && commits > 0 => {
                tracing::warn!(data = %path.display(), "no manifest; writing one now");
            }
            _ => {}
        }
        manifest::write(path, commits)?;
        Ok(Store {
            event_ids: event_ids::EventIds::start(db.clone())?,
            db,
            path: path.to_owned(),
            options,
            commits: Mutex::new(commits),
            manifest: Mutex::new((Instant::now(), commits)),
            on_commit: std::sync::OnceLock::new(),
        })
    }

    /// How this store was opened.
    pub fn options(&self) -> StoreOptions {
        self.options
    }

    /// Sets the function told how long each commit takes; only the first
    /// call counts.
    pub fn observe_commits(&self, observer: CommitObserver) {
        let _ = self.on_commit.set(observer);
    }

    /// Applies a batch atomically and waits until it is on disk.
    pub fn commit(&self, batch: Batch) -> Result<()> {
        let started = Instant::now();
        let Batch(mut batch) = batch;
        let number = {
            // Numbers are taken and batches applied in one order, so the
            // stored count only grows.
            let mut commits = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
            let number = *commits + 1;
            batch.insert(COMMITS_KEY, &number.to_be_bytes());
            self.db.apply_batch(batch)?;
            *commits = number;
            number
        };
        self.db.flush()?;
        if let Some(observe) = self.on_commit.get() {
            observe(started.elapsed());
        }

        // Every commit up to `number` is durable now; say so now and then.
        let mut manifest = self.manifest.lock().unwrap_or_else(PoisonError::into_inner);
        if number > manifest.1 && manifest.0.elapsed() >= MANIFEST_EVERY {
            manifest::write(&self.path, number)?;
            *manifest = (Instant::now(), number);
        }
        Ok(())
    }

    /// How many commits the database holds.
    pub fn commit_count(&self) -> u64 {
        *self.commits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands over the event ids of batch `sequence`, just committed with
    /// their `I` row (`keys::event_ids_key`), to be indexed.
    pub fn events_committed(&self, tenant: &str, sequence: u64, ids: Vec<String>) {
        self.event_ids.committed(tenant, sequence, ids);
    }

    /// Waits until everything written is on disk, and records it in the manifest.
    pub fn flush(&self) -> Result<()> {
        self.event_ids.drain()?;
        let commits = *self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        self.db.flush()?;
        manifest::write(&self.path, commits)?;
        *self.manifest.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), commits);
        Ok(())
    }

    /// Every tenant's API keys, in key order (by tenant, then key id).
    pub fn api_keys(&self) -> Result<Vec<records::ApiKeyRecord>> {
        let mut found = Vec::new();
        for row in self.db.scan_prefix([keys::TAG_API_KEY]) {
            let (_, value) = row?;
            found.push(decode_json(&value, "API key")?);
        }
        Ok(found)
    }

    /// Stores an API key, durably.
    pub fn put_api_key(&self, record: &records::ApiKeyRecord) -> Result<()> {
        let mut batch = Batch::default();
        batch.insert(
            keys::api_key_key(&record.tenant, &record.key_id),
            encode_json(record)?,
        );
        self.commit(batch)
    }

    /// Reads every tenant.
    pub fn load(&self) -> Result<Vec<TenantSnapshot>> {
        let mut tenants = Vec::new();
        for row in self.db.scan_prefix([keys::TAG_META]) {
            let (key, value) = row?;
            let (_, tenant, _) = keys::split_key(&key)?;
            let meta: TenantMeta = decode_json(&value, "tenant meta")?;
            tenants.push(self.load_tenant(tenant, meta)?);
        }
        Ok(tenants)
    }

    /// Reads one tenant; `None` when it has nothing stored.
    pub fn load_one(&self, tenant: &str) -> Result<Option<TenantSnapshot>> {
        match self.db.get(keys::meta_key(tenant))? {
            Some(value) => {
                let meta = decode_json(&value, "tenant meta")?;
                self.load_tenant(tenant, meta).map(Some)
            }
            None => Ok(None),
        }
    }

    fn load_tenant(&self, tenant: &str, meta: TenantMeta) -> Result<TenantSnapshot> {
        let started = Instant::now();
        // The customer ids are read on a second thread meanwhile: at ten
        // million customers each part takes seconds.
        let (bitmaps, customers) = std::thread::scope(|scope| {
            let customers = scope.spawn(|| self.read_customer_ids(tenant, &meta));
            let bitmaps = self.read_bitmaps(tenant);
            let customers = customers.join().unwrap_or_else(|_| {
                Err(Error::Internal(format!(
                    "tenant `{tenant}`: reading customer ids failed"
                )))
            });
            (bitmaps, customers)
        });
        let (bitmaps, delta_log, bitmaps_read, deltas_read) = bitmaps?;
        let (mut customers, customers_read) = customers?;
        // Names of customers deleted since their chunk was written are
        // still in it; only live dense ids count.
        let live = bitmaps.get(&BitmapKey::Live).cloned().unwrap_or_default();
        let mut dead = RoaringBitmap::new();
        dead.insert_range(0..meta.next_dense);
        dead -= &live;
        for dense in &dead {
            customers.remove_dense_id(dense);
        }
        tracing::debug!(
            tenant,
            customers = customers.len(),
            customer_id_bytes = customers.heap_bytes(),
            bitmaps = bitmaps.len(),
            bitmap_bytes = bitmaps.values().map(|b| b.serialized_size()).sum::<usize>(),
            bitmaps_millis = bitmaps_read.as_millis() as u64,
            deltas_millis = (deltas_read - bitmaps_read).as_millis() as u64,
            customers_millis = customers_read.as_millis() as u64,
            millis = started.elapsed().as_millis() as u64,
            resident_mib = resident_mib(),
            "tenant read"
        );

        // Batches whose ids were not indexed before a crash (or a failed
        // write): pending again, and indexed again. After a failed write
        // some may still be queued; indexing twice is harmless.
        let prefix = keys::tenant_prefix(keys::TAG_EVENT_IDS, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let sequence = keys::decode_sequence(&key[prefix.len()..])?;
            self.event_ids
                .committed(tenant, sequence, event_ids::decode(&value)?);
        }

        let mut segments = Vec::new();
        for row in self
            .db
            .scan_prefix(keys::tenant_prefix(keys::TAG_SEGMENT, tenant))
        {
            let (_, value) = row?;
            segments.push(decode_json(&value, "segment")?);
        }

        let mut snapshots = Vec::new();
        for row in self
            .db
            .scan_prefix(keys::tenant_prefix(keys::TAG_SNAPSHOT, tenant))
        {
            let (_, value) = row?;
            snapshots.push(decode_json(&value, "snapshot")?);
        }

        Ok(TenantSnapshot {
            tenant: tenant.to_owned(),
            meta,
            customers,
            bitmaps,
            delta_log,
            segments,
            snapshots,
        })
    }

    /// A tenant's bitmaps with its delta log replayed, the log, and when
    /// (since `started`) the chunks and the log were read.
    #[allow(clippy::type_complexity)]
    fn read_bitmaps(
        &self,
        tenant: &str,
    ) -> Result<(
        HashMap<BitmapKey, RoaringBitmap>,
        DeltaLog,
        Duration,
        Duration,
    )> {
        let started = Instant::now();
        let mut bitmaps: Vec<(BitmapKey, RoaringBitmap)> = Vec::new();
        let prefix = keys::tenant_prefix(keys::TAG_BITMAP, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let (bitmap, chunk) = keys::decode_bitmap_chunk(&key[prefix.len()..])?;
            let part = RoaringBitmap::deserialize_from(value.as_ref()).map_err(|error| {
                Error::Corrupt(format!("tenant `{tenant}`: bitmap {bitmap:?}: {error}"))
            })?;
            let (low, high) = chunk_bounds(chunk);
            if part.min().is_some_and(|min| min < low) || part.max().is_some_and(|max| max > high) {
                return Err(Error::Corrupt(format!(
                    "tenant `{tenant}`: bitmap {bitmap:?} chunk {chunk} holds ids outside it"
                )));
            }
            // Chunks of one bitmap are adjacent in key order.
            match bitmaps.last_mut() {
                Some((last, whole)) if *last == bitmap => *whole |= part,
                _ => bitmaps.push((bitmap, part)),
            }
        }

        let mut bitmaps: HashMap<BitmapKey, RoaringBitmap> = bitmaps.into_iter().collect();
        let bitmaps_read = started.elapsed();
        let delta_log = self.replay_deltas(tenant, &mut bitmaps)?;
        Ok((bitmaps, delta_log, bitmaps_read, started.elapsed()))
    }

    /// Every customer id in the tenant's `N` rows, live or not, and how
    /// long reading them took.
    fn read_customer_ids(
        &self,
        tenant: &str,
        meta: &TenantMeta,
    ) -> Result<(CustomerIds, Duration)> {
        let started = Instant::now();
        let mut customers = CustomerIds::new();
        // The live count is unknown until the bitmaps are read; dense ids
        // handed out bound it.
        customers.reserve(meta.next_dense as usize);
        let prefix = keys::tenant_prefix(keys::TAG_NAMES, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let chunk = decode_u32(&key[prefix.len()..])?;
            names::decode(chunk, &value, |dense, customer_id| {
                if dense >= meta.next_dense {
                    return Err(Error::Corrupt(format!(
                        "tenant `{tenant}`: customer `{customer_id}` has dense id {dense} beyond {}",
                        meta.next_dense
                    )));
                }
                customers.insert(customer_id, dense);
                Ok(())
            })
            .map_err(|error| Error::Corrupt(format!("tenant `{tenant}`: {error}")))?;
        }
        Ok((customers, started.elapsed()))
    }

    /// Applies a tenant's delta rows, in write order, to its base bitmaps.
    fn replay_deltas(
        &self,
        tenant: &str,
        bitmaps: &mut HashMap<BitmapKey, RoaringBitmap>,
    ) -> Result<DeltaLog> {
        let mut log = DeltaLog::default();
        let prefix = keys::tenant_prefix(keys::TAG_BITMAP_DELTA, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let sequence = keys::decode_sequence(&key[prefix.len()..])?;
            let mut touched = Vec::new();
            delta::decode(&value, |bitmap_key, add, remove| {
                let chunks = delta::chunks_of(&(&add | &remove));
                let bitmap = bitmaps.entry(bitmap_key.clone()).or_default();
                *bitmap |= add;
                *bitmap -= remove;
                touched.push((bitmap_key, chunks));
            })
            .map_err(|error| Error::Corrupt(format!("tenant `{tenant}`: {error}")))?;
            log.append(sequence, value.len(), &touched);
        }
        bitmaps.retain(|_, bitmap| !bitmap.is_empty());
        Ok(log)
    }

    /// The stored record of a customer.
    pub fn customer(&self, tenant: &str, dense: u32) -> Result<Option<CustomerRecord>> {
        match self.db.get(keys::customer_key(tenant, dense))? {
            Some(value) => Ok(Some(decode_json(&value, "customer")?)),
            None => Ok(None),
        }
    }

    /// The members of a snapshot as taken (dense ids, deleted ones included).
    pub fn snapshot_members(&self, tenant: &str, snapshot_id: &str) -> Result<RoaringBitmap> {
        let value = self
            .db
            .get(keys::snapshot_members_key(tenant, snapshot_id))?
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "tenant `{tenant}`: snapshot `{snapshot_id}` has no members row"
                ))
            })?;
        RoaringBitmap::deserialize_from(value.as_ref()).map_err(|error| {
            Error::Corrupt(format!(
                "tenant `{tenant}`: snapshot `{snapshot_id}` members: {error}"
            ))
        })
    }

    /// The dense ids of the customers with a normalised e-mail or phone, in order.
    pub fn contact_matches(
        &self,
        tenant: &str,
        kind: keys::ContactKind,
        value: &str,
    ) -> Result<Vec<u32>> {
        let prefix = keys::contact_prefix(tenant, kind, value);
        let mut found = Vec::new();
        for row in self.db.scan_prefix(&prefix) {
            let (key, _) = row?;
            let dense = key[prefix.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    Error::Corrupt(format!("tenant `{tenant}`: a contact key is damaged"))
                })?;
            found.push(dense);
        }
        Ok(found)
    }

    /// Calls `visit` with every stored customer record of a tenant.
    pub fn each_customer(
        &self,
        tenant: &str,
        mut visit: impl FnMut(u32, &CustomerRecord),
    ) -> Result<()> {
        let prefix = keys::tenant_prefix(keys::TAG_CUSTOMER, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let dense = key[prefix.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    Error::Corrupt(format!("tenant `{tenant}`: a customer key is damaged"))
                })?;
            visit(dense, &decode_json(&value, "customer")?);
        }
        Ok(())
    }

    /// Whether an event id was applied before.
    pub fn event_seen(&self, tenant: &str, event_id: &str) -> Result<bool> {
        // Pending first: the thread inserts the `E` row before it stops
        // holding the id as pending.
        Ok(self.event_ids.is_pending(tenant, event_id)
            || self.db.contains_key(keys::event_id_key(tenant, event_id))?)
    }

    /// The dense ids with an event of `kind` inside `range`, read from the
    /// time index (used for the partial days at the edges of a window);
    /// with `payload`, only events that carry it (a click's broadcast).
    /// Rows written by a batch after `last_batch` (on disk, not yet
    /// acknowledged) are skipped.
    pub fn events_in(
        &self,
        tenant: &str,
        kind: EventKind,
        range: TimeRange,
        payload: Option<&[u8]>,
        last_batch: u64,
    ) -> Result<RoaringBitmap> {
        let mut ids = RoaringBitmap::new();
        if range.is_empty() {
            return Ok(ids);
        }
        let wanted = |t: Seconds, carried: &[u8]| {
            range.from <= t && t <= range.to && payload.is_none_or(|payload| carried == payload)
        };

        let from = keys::event_pack_bound(tenant, kind, history::utc_day(range.from));
        let to = keys::event_pack_bound(tenant, kind, history::utc_day(range.to) + 1);
        let prefix_len = keys::tenant_prefix(keys::TAG_EVENT_PACK, tenant).len();
        for row in self.db.range(from..to) {
            let (key, value) = row?;
            let (_, sequence) = keys::decode_event_pack(&key[prefix_len..])?;
            if sequence <= last_batch {
                history::each_entry(&value, |t, dense, carried| {
                    if wanted(t, carried) {
                        ids.insert(dense);
                    }
                })?;
            }
        }

        // Rows of format 1, one per event.
        let from = keys::event_time_bound(tenant, kind, range.from);
        let mut to = keys::event_time_bound(tenant, kind, range.to);
        to.extend_from_slice(&[0xff; 4]);
        for row in self.db.range(from..=to) {
            let (key, value) = row?;
            let (batch, carried) = split_event_row(&value)?;
            if batch <= last_batch && payload.is_none_or(|payload| carried == payload) {
                ids.insert(keys::event_time_dense(&key)?);
            }
        }
        Ok(ids)
    }

    /// Calls `visit` with every event of a tenant's time index: kind, time,
    /// dense id and payload.
    pub fn each_event(
        &self,
        tenant: &str,
        mut visit: impl FnMut(EventKind, Seconds, u32, &[u8]),
    ) -> Result<()> {
        let prefix = keys::tenant_prefix(keys::TAG_EVENT_PACK, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let (kind, _) = keys::decode_event_pack(&key[prefix.len()..])?;
            history::each_entry(&value, |t, dense, payload| visit(kind, t, dense, payload))?;
        }
        let prefix = keys::tenant_prefix(keys::TAG_EVENT_TIME, tenant);
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let (kind, time, dense) = keys::decode_event_time(&key[prefix.len()..])?;
            let (_, payload) = split_event_row(&value)?;
            visit(kind, time, dense, payload);
        }
        Ok(())
    }
}

/// The first and last id of a chunk.
pub fn chunk_bounds(chunk: u16) -> (u32, u32) {
    let low = u32::from(chunk) << 16;
    (low, low | 0xffff)
}

/// Serialises a value as JSON for storage.
pub fn encode_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|error| Error::Internal(format!("encoding a record: {error}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| Error::Corrupt(format!("{what} record: {error}")))
}

/// Moves every tenant's customer ids from `X` rows (format 2) to `N`
/// chunks (format 3). Safe to run again after a crash: it rewrites whole
/// chunks from the `X` rows, which stay until the format marker says 3.
fn upgrade_names(db: &sled::Db) -> Result<u64> {
    let mut chunks: BTreeMap<(String, u32), Vec<(u32, String)>> = BTreeMap::new();
    let mut customers = 0;
    for row in db.scan_prefix([keys::TAG_EXTERNAL_ID]) {
        let (key, value) = row?;
        let (_, tenant, rest) = keys::split_key(&key)?;
        let customer_id = std::str::from_utf8(rest)
            .map_err(|_| Error::Corrupt(format!("tenant `{tenant}`: customer id not UTF-8")))?;
        let dense = decode_u32(&value)?;
        chunks
            .entry((tenant.to_owned(), names::chunk_of(dense)))
            .or_default()
            .push((dense, customer_id.to_owned()));
        customers += 1;
    }
    let mut batch = sled::Batch::default();
    let mut rows = 0;
    for ((tenant, chunk), entries) in chunks {
        let row = names::encode(entries.iter().map(|(dense, name)| (*dense, name.as_str())))?;
        batch.insert(keys::names_key(&tenant, chunk), row);
        rows += 1;
        if rows % 1_000 == 0 {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(customers)
}

/// Removes the `X` rows that format 3 no longer reads.
fn remove_external_ids(db: &sled::Db) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for row in db.scan_prefix([keys::TAG_EXTERNAL_ID]) {
        let (key, _) = row?;
        batch.remove(key);
        n += 1;
        if n % 10_000 == 0 {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// This process's resident memory in MiB, where Linux tells it (for logs).
fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096) >> 20)
}

fn decode_u32(bytes: &[u8]) -> Result<u32> {
    let array: [u8; 4] = bytes.try_into().map_err(|_| {
        Error::Corrupt(format!("expected a 4-byte id, found {} bytes", bytes.len()))
    })?;
    Ok(u32::from_be_bytes(array))
}

/// A time-index row's value: the number of the batch that wrote it, and the
/// event's payload.
fn split_event_row(value: &[u8]) -> Result<(u64, &[u8])> {
    let (batch, payload) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| Error::Corrupt(format!("time-index row of {} bytes", value.len())))?;
    Ok((u64::from_be_bytes(*batch), payload))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn row(batch: u64, payload: &[u8]) -> Vec<u8> {
        let mut value = batch.to_be_bytes().to_vec();
        value.extend_from_slice(payload);
        value
    }

    #[test]
    fn event_ids_left_unindexed_by_a_crash_are_seen_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..50).map(|n| format!("e{n}")).collect();
        {
            // A commit whose ids never reached the thread, as after a crash
            // right after the batch became durable.
            let store = Store::open(dir.path()).unwrap();
            let mut batch = Batch::default();
            batch.insert(
                keys::meta_key("t"),
                encode_json(&TenantMeta::default()).unwrap(),
            );
            batch.insert(
                keys::event_ids_key("t", 7),
                event_ids::encode(&ids).unwrap(),
            );
            store.commit(batch).unwrap();
            assert!(!store.event_seen("t", "e0").unwrap());
        }
        let store = once_free(|| Store::open(dir.path()));
        store.load().unwrap();
        for id in &ids {
            assert!(store.event_seen("t", id).unwrap(), "{id}");
        }
        assert!(!store.event_seen("t", "e50").unwrap());
        assert!(!store.event_seen("other", "e0").unwrap());
        // Once drained, the ids are `E` rows and the batch's row is gone.
        store.flush().unwrap();
        for id in &ids {
            assert!(store.db.contains_key(keys::event_id_key("t", id)).unwrap());
        }
        assert!(!store.db.contains_key(keys::event_ids_key("t", 7)).unwrap());
    }

    #[test]
    fn committed_event_ids_are_seen_at_once_and_indexed_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for sequence in 1..=200u64 {
            let ids: Vec<String> = (0..10).map(|n| format!("e{sequence}-{n}")).collect();
            let mut batch = Batch::default();
            batch.insert(
                keys::event_ids_key("t", sequence),
                event_ids::encode(&ids).unwrap(),
            );
            store.commit(batch).unwrap();
            store.events_committed("t", sequence, ids);
            // Every id so far is seen, whether the thread has got to it or not.
            for earlier in [1, sequence / 2 + 1, sequence] {
                assert!(store.event_seen("t", &format!("e{earlier}-9")).unwrap());
            }
        }
        store.flush().unwrap();
        let rows = store
            .db
            .scan_prefix(keys::tenant_prefix(keys::TAG_EVENT_IDS, "t"))
            .count();
        assert_eq!(rows, 0);
        let indexed = store
            .db
            .scan_prefix(keys::tenant_prefix(keys::TAG_EVENT_ID, "t"))
            .count();
        assert_eq!(indexed, 2000);
    }

    /// Clicks as (time, dense id, broadcast, batch), and one order.
    const CLICKS: [(Seconds, u32, &[u8], u64); 4] = [
        (100, 1, b"b1", 1),
        (86_399, 2, b"b2", 1),
        (86_400, 3, b"b1", 2),
        (-1, 5, b"b1", 2),
    ];

    /// Writes the events as format-1 rows (`packed` false) or packed rows.
    fn write_events(store: &Store, tenant: &str, packed: bool) {
        let mut batch = Batch::default();
        let mut packs = [history::Packs::default(), history::Packs::default()];
        let events = CLICKS
            .iter()
            .map(|&(t, dense, payload, sequence)| (EventKind::Clicked, t, dense, payload, sequence))
            .chain([(EventKind::Ordered, 120, 4, &b""[..], 1)]);
        for (kind, t, dense, payload, sequence) in events {
            if packed {
                packs[sequence as usize - 1]
                    .add(kind, t, dense, payload)
                    .unwrap();
            } else {
                batch.insert(
                    keys::event_time_key(tenant, kind, t, dense),
                    row(sequence, payload),
                );
            }
        }
        for (n, pack) in packs.into_iter().enumerate() {
            pack.write(&mut batch, tenant, n as u64 + 1);
        }
        store.commit(batch).unwrap();
    }

    #[test]
    fn packed_and_format_1_time_indexes_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write_events(&store, "old", false);
        write_events(&store, "new", true);
        // A naive filter of the events, for every range around the edges.
        let expected = |range: TimeRange, payload: Option<&[u8]>, last_batch: u64| {
            CLICKS
                .iter()
                .filter(|&&(t, _, carried, sequence)| {
                    range.from <= t
                        && t <= range.to
                        && sequence <= last_batch
                        && payload.is_none_or(|payload| payload == carried)
                })
                .map(|&(_, dense, _, _)| dense)
                .collect::<BTreeSet<u32>>()
        };
        let times = [-86_400, -2, -1, 0, 99, 100, 101, 86_399, 86_400, 86_401];
        for from in times {
            for to in times {
                for payload in [None, Some(&b"b1"[..])] {
                    for last_batch in [0, 1, 2] {
                        let range = TimeRange { from, to };
                        let want = expected(range, payload, last_batch);
                        for tenant in ["old", "new"] {
                            let found = store
                                .events_in(tenant, EventKind::Clicked, range, payload, last_batch)
                                .unwrap();
                            let found: BTreeSet<u32> = found.iter().collect();
                            assert_eq!(
                                found, want,
                                "{tenant} {from}..={to} {payload:?} {last_batch}"
                            );
                        }
                    }
                }
            }
        }
        for tenant in ["old", "new"] {
            let mut seen = BTreeSet::new();
            store
                .each_event(tenant, |kind, t, dense, payload| {
                    seen.insert((kind, t, dense, payload.to_vec()));
                })
                .unwrap();
            let mut want: BTreeSet<_> = CLICKS
                .iter()
                .map(|&(t, dense, payload, _)| (EventKind::Clicked, t, dense, payload.to_vec()))
                .collect();
            want.insert((EventKind::Ordered, 120, 4, Vec::new()));
            assert_eq!(seen, want, "{tenant}");
        }
    }

    #[test]
    fn a_time_index_read_skips_rows_of_later_batches_and_other_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.insert(
            keys::event_time_key("t", EventKind::Clicked, 100, 1),
            row(1, b"b1"),
        );
        batch.insert(
            keys::event_time_key("t", EventKind::Clicked, 150, 2),
            row(1, b"b2"),
        );
        batch.insert(
            keys::event_time_key("t", EventKind::Clicked, 200, 3),
            row(2, b"b1"),
        );
        batch.insert(
            keys::event_time_key("t", EventKind::Ordered, 120, 4),
            row(1, b""),
        );
        store.commit(batch).unwrap();

        let all = TimeRange { from: 0, to: 1000 };
        let ids = |payload: Option<&[u8]>, last_batch| {
            let found = store
                .events_in("t", EventKind::Clicked, all, payload, last_batch)
                .unwrap();
            found.iter().collect::<Vec<u32>>()
        };
        assert_eq!(ids(None, 1), vec![1, 2]);
        assert_eq!(ids(None, 2), vec![1, 2, 3]);
        assert_eq!(ids(Some(b"b1"), 2), vec![1, 3]);
        let edge = TimeRange { from: 150, to: 200 };
        let found = store
            .events_in("t", EventKind::Clicked, edge, None, 2)
            .unwrap();
        assert_eq!(found.iter().collect::<Vec<u32>>(), vec![2, 3]);
    }

    /// Opens `path` once the previous handle's sled threads let go of its
    /// lock, which they do a moment after the handle is dropped.
    fn once_free<T>(open: impl Fn() -> Result<T>) -> T {
        for _ in 0..200 {
            match open() {
                Err(Error::FailedPrecondition(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                other => return other.unwrap(),
            }
        }
        panic!("the data directory stayed locked for 10 s");
    }

    #[test]
    fn a_directory_in_use_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(Error::FailedPrecondition(message)) => assert!(message.contains("in use")),
            other => panic!("{:?}", other.err()),
        }
    }

    /// A format-2 directory (a row per customer id) opens as format 3 with
    /// the same customers, deleted ones still deleted, and no `X` rows left.
    #[test]
    fn format_2_customer_ids_are_upgraded_in_place() {
        use crate::engine::Engine;
        use crate::engine::types::{Audience, CustomerUpdate};

        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..3000).map(|n| format!("shop-{n}")).collect();
        {
            let engine = Engine::open(dir.path()).unwrap();
            let updates = ids
                .iter()
                .map(|id| CustomerUpdate {
                    customer_id: id.clone(),
                    ..CustomerUpdate::default()
                })
                .collect();
            engine.upsert_customers("t", updates, 0).unwrap();
            engine.delete_customers("t", &ids[..10], 0).unwrap();
        }
        {
            // Back to format 2: `X` rows of the live customers, no `N` rows.
            let store = once_free(|| Store::open(dir.path()));
            let snapshot = store.load_one("t").unwrap().unwrap();
            let mut batch = sled::Batch::default();
            for row in store.db.scan_prefix([keys::TAG_NAMES]) {
                batch.remove(row.unwrap().0);
            }
            for id in &ids[10..] {
                let dense = snapshot.customers.get(id).unwrap();
                batch.insert(keys::external_id_key("t", id), &dense.to_be_bytes());
            }
            batch.insert(FORMAT_KEY, FORMAT_VERSION_2);
            store.db.apply_batch(batch).unwrap();
            store.flush().unwrap();
        }
        let engine = once_free(|| Engine::open(dir.path()));
        let everyone = Audience::Rule(crate::rule::parse("NOT opted_in").unwrap());
        let page = engine.page("t", &everyone, 0, None, 10_000).unwrap();
        let mut expected = ids[10..].to_vec();
        let mut got = page.customer_ids;
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        drop(engine);
        let store = once_free(|| Store::open(dir.path()));
        assert_eq!(
            store.db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
            FORMAT_VERSION
        );
        assert!(
            store
                .db
                .scan_prefix([keys::TAG_EXTERNAL_ID])
                .next()
                .is_none()
        );
    }
}
