//! The in-memory index of one tenant: its customers' dense ids and one
//! roaring bitmap per qualifier value, plus its saved segments.
//!
//! The index is loaded from storage at start and changed only by
//! `engine::write` after the change is durable, so it never shows a write
//! that was not acknowledged.

pub mod bsi;
pub mod cache;
pub mod eval;
pub mod ids;

use ids::CustomerIds;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use chrono_tz::Tz;
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::rule::Rule;
use crate::store::TenantSnapshot;
use crate::store::delta::DeltaLog;
use crate::store::keys::BitmapKey;
use crate::store::records::{SegmentRecord, SnapshotRecord, TenantMeta};

static EMPTY: LazyLock<RoaringBitmap> = LazyLock::new(RoaringBitmap::new);

/// A saved segment with its rule parsed.
#[derive(Debug, Clone)]
pub struct SavedSegment {
    pub record: SegmentRecord,
    /// `None` for a segment made of its include list only.
    pub rule: Option<Rule>,
}

/// One tenant's customers, bitmaps and segments.
#[derive(Debug)]
pub struct TenantIndex {
    pub tenant: String,
    pub meta: TenantMeta,
    pub time_zone: Tz,
    /// Customer id to dense id and back, for live customers. Dense ids are
    /// never reused.
    pub ids: CustomerIds,
    pub bitmaps: HashMap<BitmapKey, RoaringBitmap>,
    /// The bitmap delta rows on disk since the last checkpoint.
    pub delta_log: DeltaLog,
    pub segments: BTreeMap<String, SavedSegment>,
    /// Snapshots, without their members (read from storage when used).
    pub snapshots: BTreeMap<String, SnapshotRecord>,
    /// Results of costly clauses, and the versions of what they read.
    pub cache: cache::ClauseCache,
    pub versions: cache::Versions,
}

impl TenantIndex {
    /// A tenant with no customers.
    pub fn new(tenant: String, meta: TenantMeta) -> Result<Self> {
        let time_zone = parse_time_zone(&tenant, &meta.time_zone)?;
        Ok(TenantIndex {
            tenant,
            meta,
            time_zone,
            ids: CustomerIds::new(),
            cache: cache::ClauseCache::default(),
            versions: cache::Versions::default(),
            bitmaps: HashMap::new(),
            delta_log: DeltaLog::default(),
            segments: BTreeMap::new(),
            snapshots: BTreeMap::new(),
        })
    }

    /// Builds the index from what storage holds.
    pub fn from_snapshot(snapshot: TenantSnapshot) -> Result<Self> {
        let mut index = TenantIndex::new(snapshot.tenant, snapshot.meta)?;
        index.ids = snapshot.customers;
        index.bitmaps = snapshot.bitmaps;
        index.delta_log = snapshot.delta_log;
        let live = index.bitmap(&BitmapKey::Live).len();
        if live != index.ids.len() as u64 {
            return Err(Error::Corrupt(format!(
                "tenant `{}`: {live} live customers in the bitmap but {} customer ids",
                index.tenant,
                index.ids.len()
            )));
        }
        for record in snapshot.segments {
            let rule = parse_stored_rule(&index.tenant, &record)?;
            index
                .segments
                .insert(record.segment_id.clone(), SavedSegment { record, rule });
        }
        index.snapshots = snapshot
            .snapshots
            .into_iter()
            .map(|record| (record.snapshot_id.clone(), record))
            .collect();
        Ok(index)
    }

    /// The bitmap of a qualifier value; empty when nobody has it.
    pub fn bitmap(&self, key: &BitmapKey) -> &RoaringBitmap {
        self.bitmaps.get(key).unwrap_or(&EMPTY)
    }

    /// The live customers.
    pub fn live(&self) -> &RoaringBitmap {
        self.bitmap(&BitmapKey::Live)
    }

    /// The merchant's id of a dense id, if the customer is live.
    pub fn customer_id(&self, dense: u32) -> Option<&str> {
        self.ids.name(dense)
    }
}

fn parse_time_zone(tenant: &str, name: &str) -> Result<Tz> {
    name.parse()
        .map_err(|_| Error::Corrupt(format!("tenant `{tenant}`: unknown time zone `{name}`")))
}

/// Parses a stored segment's canonical rule text.
pub fn parse_stored_rule(tenant: &str, record: &SegmentRecord) -> Result<Option<Rule>> {
    if record.rule_text.is_empty() {
        return Ok(None);
    }
    crate::rule::parse(&record.rule_text)
        .map(Some)
        .map_err(|error| {
            Error::Corrupt(format!(
                "tenant `{tenant}`: segment `{}` has a rule that no longer parses: {error}",
                record.segment_id
            ))
        })
}
