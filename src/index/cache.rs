//! Results of the costly clauses (bit-sliced ranges, time windows) over all
//! live customers, kept while what they read is unchanged.
//!
//! A merchant editing a rule recounts it on every keystroke, and most of
//! the clauses are the same from one count to the next; dashboards and
//! flows ask for the same audiences again and again. An AND intersects the
//! cached result with its survivors.
//!
//! An entry is valid while the bitmaps it was computed from are: each
//! clause reads one family of bitmaps (the slices of one number, the days
//! of one event kind, and for amounts that default to 0 the live
//! customers), and every write records, per family it touched, its write
//! sequence. Messages streaming in leave a cached `lifetime_spend` range
//! valid; an order makes the `ordered` windows and `spent` ranges stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use roaring::RoaringBitmap;

use crate::rule::{EventKind, NumberField, NumberTest, SetField};
use crate::store::keys::{BitmapKey, NumberAttr};
use crate::time::Seconds;

/// What a cached clause reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// The live customers.
    Live,
    /// The slices and presence of one bit-sliced number.
    Number(NumberAttr),
    /// Any day bitmap or stored event of one kind (a broadcast's clicks
    /// are clicks).
    Event(EventKind),
    /// The value bitmaps of one set-like field.
    Set(SetField),
}

impl Family {
    /// The family a stored bitmap belongs to, if a cached clause reads it.
    pub fn of(key: &BitmapKey) -> Option<Family> {
        match key {
            BitmapKey::Live => Some(Family::Live),
            BitmapKey::Slice(attr, _) | BitmapKey::Exists(attr) => Some(Family::Number(*attr)),
            BitmapKey::EventAny(kind) | BitmapKey::EventDay(kind, _) => Some(Family::Event(*kind)),
            BitmapKey::ClickedBroadcast(_) | BitmapKey::ClickedBroadcastDay(..) => {
                Some(Family::Event(EventKind::Clicked))
            }
            BitmapKey::Tag(_) => Some(Family::Set(SetField::Tag)),
            BitmapKey::State(_) => Some(Family::Set(SetField::State)),
            BitmapKey::Timezone(_) => Some(Family::Set(SetField::Timezone)),
            BitmapKey::KlaviyoList(_) => Some(Family::Set(SetField::KlaviyoList)),
            _ => None,
        }
    }
}

/// The write sequence that last changed each family; 0 for none since the
/// tenant was loaded.
#[derive(Debug, Default)]
pub struct Versions(HashMap<Family, u64>);

impl Versions {
    pub fn bump(&mut self, family: Family, sequence: u64) {
        self.0.insert(family, sequence);
    }

    /// The version of data read by clauses reading `families`.
    pub fn of(&self, families: &[Family]) -> u64 {
        families
            .iter()
            .map(|family| self.0.get(family).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }
}

/// Bytes of cached bitmaps a tenant may hold.
pub const MAX_BYTES: usize = 128 << 20;
/// Clauses remembered as computed once, before the memory is cleared.
const MAX_MISSES: usize = 4_096;

/// A clause whose result does not depend on the rest of the rule, with its
/// window resolved to instants (so `WITHIN 30d` at two instants of one day
/// whose events end before both is one entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Window {
        kind: EventKind,
        broadcast: Option<String>,
        from: Seconds,
        to: Seconds,
    },
    Number {
        field: NumberField,
        test: NumberTest,
    },
    /// Creation times, as a test on seconds.
    Created(NumberTest),
    /// A union of values of a set-like field (`IN`).
    Set(SetField, Vec<String>),
}

#[derive(Default)]
pub struct ClauseCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<CacheKey, Entry>,
    /// Clauses computed once on a few candidates, with the data version:
    /// asked for again at that version, they are computed for everyone.
    missed: HashMap<CacheKey, u64>,
    bytes: usize,
    /// Counts lookups, to find the least recently used entry.
    clock: u64,
}

struct Entry {
    /// The version of the data it was computed from.
    version: u64,
    bitmap: Arc<RoaringBitmap>,
    bytes: usize,
    used: u64,
}

impl std::fmt::Debug for ClauseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("ClauseCache")
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

impl ClauseCache {
    /// The cached result of `key` computed from data of version `version`.
    pub fn get(&self, version: u64, key: &CacheKey) -> Option<Arc<RoaringBitmap>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clock += 1;
        let clock = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        if entry.version != version {
            return None;
        }
        entry.used = clock;
        Some(entry.bitmap.clone())
    }

    /// Notes that `key` was computed without the cache at `version`; true
    /// when it already was once, so that it is worth computing for everyone.
    pub fn missed_again(&self, version: u64, key: &CacheKey) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.missed.get(key) == Some(&version) {
            return true;
        }
        if inner.missed.len() >= MAX_MISSES {
            inner.missed.clear();
        }
        inner.missed.insert(key.clone(), version);
        false
    }

    /// Keeps `bitmap` as the result of `key` over data of `version`,
    /// dropping the least recently used entries beyond the cap.
    pub fn insert(&self, version: u64, key: CacheKey, bitmap: Arc<RoaringBitmap>) {
        let bytes = bitmap.serialized_size();
        if bytes > MAX_BYTES / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.entries.get(&key)
            && old.version > version
        {
            // A count that read older data than the entry's finished last.
            return;
        }
        while inner.bytes + bytes > MAX_BYTES {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(entry) = inner.entries.remove(&oldest) {
                inner.bytes -= entry.bytes;
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.bytes += bytes;
        let entry = Entry {
            version,
            bitmap,
            bytes,
            used,
        };
        if let Some(old) = inner.entries.insert(key, entry) {
            inner.bytes -= old.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> CacheKey {
        CacheKey::Created(NumberTest::Between(n, n))
    }

    #[test]
    fn entries_live_for_one_version_and_within_the_cap() {
        let cache = ClauseCache::default();
        let bitmap = Arc::new(RoaringBitmap::from_iter(0..1000u32));
        cache.insert(3, key(1), bitmap.clone());
        assert_eq!(cache.get(3, &key(1)).as_deref(), Some(&*bitmap));
        assert!(cache.get(4, &key(1)).is_none());
        assert!(cache.get(3, &key(2)).is_none());
        // Entries are versioned one by one.
        cache.insert(5, key(2), bitmap.clone());
        assert!(cache.get(3, &key(1)).is_some());
        assert!(cache.get(5, &key(2)).is_some());
        // An answer from older data does not replace a newer one.
        cache.insert(4, key(2), Arc::new(RoaringBitmap::new()));
        assert_eq!(cache.get(5, &key(2)).as_deref(), Some(&*bitmap));
        cache.insert(6, key(2), Arc::new(RoaringBitmap::new()));
        assert!(cache.get(5, &key(2)).is_none());

        // A clause is worth computing for everyone the second time it is
        // asked for over the same data.
        assert!(!cache.missed_again(7, &key(9)));
        assert!(cache.missed_again(7, &key(9)));
        assert!(!cache.missed_again(8, &key(9)));

        // Dense bitmaps of 8 KiB a chunk: the cap holds a known number.
        let big = Arc::new(RoaringBitmap::from_iter((0..(1u32 << 16) * 64).step_by(2)));
        let per = big.serialized_size();
        for n in 0..(MAX_BYTES / per + 8) as u64 {
            cache.insert(5, key(100 + n), big.clone());
            // The first of them is used all along, so it stays.
            assert!(cache.get(5, &key(100)).is_some());
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= MAX_BYTES);
        assert_eq!(inner.entries.len(), MAX_BYTES / per);
    }

    /// `lifetime_spend != 5` keeps customers with no value, so a customer
    /// created after the clause was cached is in it (a cached result read
    /// only the lifetime-spend bitmaps, and missed new customers).
    #[test]
    fn a_cached_not_equal_sees_customers_created_after_it() {
        use crate::engine::Engine;
        use crate::engine::types::{Audience, CustomerUpdate};

        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let customer = |id: String, spend: Option<u64>| CustomerUpdate {
            customer_id: id,
            lifetime_spend_cents: spend,
            ..Default::default()
        };
        // 3,000 customers (over the few-candidates threshold), every third
        // with a lifetime spend of 5.00.
        let first: Vec<_> = (0..3_000)
            .map(|n| customer(format!("c{n}"), (n % 3 == 0).then_some(500)))
            .collect();
        engine.upsert_customers("t", first, 1_800_000_000).unwrap();
        // Inside an AND, where a cached result stands for the clause.
        let rule = crate::rule::parse("lifetime_spend != 5 AND NOT tag = \"zz\"").unwrap();
        let audience = Audience::Rule(rule);
        let count = || engine.count("t", &audience, 1_800_000_000).unwrap();
        // Asked twice: the second time it is computed for everyone and kept.
        assert_eq!(count(), 2_000);
        assert_eq!(count(), 2_000);

        // New customers without a lifetime spend: no lifetime-spend bitmap
        // changes, and both are in the clause.
        let later = vec![
            customer("new-1".into(), None),
            customer("new-2".into(), None),
        ];
        engine.upsert_customers("t", later, 1_800_000_100).unwrap();
        assert_eq!(count(), 2_002);
    }
}
