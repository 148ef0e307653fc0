//! The change feed: who entered and who left each saved segment, as writes,
//! segment edits and the clock move its members.
//!
//! Every saved segment of a tenant, archived or not, has its members kept
//! here, whether anyone watches or not, so that a consumer that comes back
//! gets what it missed. After each write, the segments that read what the
//! write touched (`dependencies`) are evaluated again for the customers it
//! touched and compared with their kept members; the differences become
//! numbered entries of the tenant's feed. A tick evaluates the segments
//! whose rules hold a relative window (`WITHIN`, `SINCE`), so that customers
//! whose events age out leave without waiting for a write (`refresh`).
//!
//! Entries are stored with the rows of `store::feed`, without a flush of
//! their own, and shown to watchers only once a flush has made them durable:
//! a watcher never sees a sequence number that a crash could take back
//! (`read`). At start the members are rebuilt from their checkpoints and
//! the stored entries after them. After a clean stop that is all; after any
//! other, the members are evaluated and the difference told (cause
//! `Recovery`), so the effect of an acknowledged write whose entries were
//! lost is still told.

mod dependencies;
mod read;
mod refresh;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};

use roaring::RoaringBitmap;
use tokio::sync::watch;

pub use dependencies::{Input, Touched};
pub use read::{FeedInitial, FeedRead, FeedWatch};

use crate::error::Result;
use crate::index::TenantIndex;
use crate::store::Store;
use crate::store::feed::MembersCheckpoint;
use crate::time::Seconds;
use dependencies::Dependencies;

/// Customer ids in one entry, entered and left together.
pub const MAX_IDS_PER_ENTRY: usize = 10_000;
/// Segments one watch may follow.
pub const MAX_WATCHED_SEGMENTS: usize = 100;
/// Entries read from storage at a time by a watch.
pub const READ_BATCH: usize = 256;

/// A tenant's feed: what watchers read without waiting for the tenant's
/// writes, and the state that writes change under the tenant's writer lock.
#[derive(Debug)]
pub struct Feed {
    state: Mutex<FeedState>,
    /// The last sequence known durable.
    published: watch::Sender<u64>,
    /// Entries up to this sequence are pruned.
    floor: AtomicU64,
}

/// Every saved segment's members as last told, and the sequence numbers.
#[derive(Debug)]
struct FeedState {
    members: HashMap<String, RoaringBitmap>,
    dependencies: Dependencies,
    /// The last sequence handed out.
    head: u64,
    /// Whether the head is stored (a tenant's first change or first watch
    /// stores it): a start without it knows no change was ever shown.
    head_stored: bool,
    /// Customer ids told per segment since its members were last stored.
    since_checkpoint: HashMap<String, u64>,
    /// Segments whose refresh failed: evaluated over everyone at the next
    /// tick.
    stale: BTreeSet<String>,
    /// The latest evaluation instant, so that instants never go back.
    last_instant: Seconds,
    /// When entries were last pruned.
    last_prune: Seconds,
    /// What the feed found in storage at start.
    start: Start,
}

/// What a tenant's feed found in storage at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// No stored head: no change was ever shown (a new tenant, or data from
    /// before the feed). The members are taken as they are, with no changes.
    Fresh,
    /// A clean stop stored every segment's members at the head, and nothing
    /// was committed since: nothing to recover.
    Clean,
    /// Otherwise: the members are evaluated and the difference told.
    Unclean,
}

impl Feed {
    /// The feed of a tenant with nothing stored.
    pub fn empty() -> Feed {
        Feed::with_state(FeedState {
            members: HashMap::new(),
            dependencies: Dependencies::default(),
            head: 0,
            head_stored: false,
            since_checkpoint: HashMap::new(),
            stale: BTreeSet::new(),
            last_instant: Seconds::MIN,
            last_prune: Seconds::MIN,
            start: Start::Fresh,
        })
    }

    fn with_state(state: FeedState) -> Feed {
        let head = state.head;
        Feed {
            state: Mutex::new(state),
            published: watch::Sender::new(head),
            floor: AtomicU64::new(0),
        }
    }

    /// Rebuilds a tenant's feed from storage: the members of each segment as
    /// of its checkpoint, with the stored entries after it replayed.
    /// `stopped_clean`: the last stop stored every feed and nothing was
    /// committed since.
    pub fn load(store: &Store, index: &TenantIndex, stopped_clean: bool) -> Result<Feed> {
        let tenant = &index.tenant;
        let stored_head = store.feed_head(tenant)?;
        let head = stored_head.unwrap_or(0);
        let oldest = store.feed_oldest(tenant)?;
        let floor = oldest.map_or(head, |oldest| oldest.saturating_sub(1));

        let mut members = HashMap::new();
        let mut checkpoints: HashMap<String, u64> = HashMap::new();
        for MembersCheckpoint {
            segment_id,
            sequence,
            members: stored,
        } in store.feed_members(tenant)?
        {
            checkpoints.insert(segment_id.clone(), sequence);
            members.insert(segment_id, stored);
        }
        let all_at_head = index
            .segments
            .keys()
            .all(|segment_id| checkpoints.get(segment_id) == Some(&head));
        let start = match stored_head {
            None => Start::Fresh,
            Some(_) if stopped_clean && all_at_head => Start::Clean,
            Some(_) => Start::Unclean,
        };

        // Replay: from the oldest checkpoint, or from the first entry kept
        // when a segment has none.
        let mut since_checkpoint: HashMap<String, u64> = HashMap::new();
        // Instants never go back, across restarts too.
        let mut last_instant = Seconds::MIN;
        let mut after = checkpoints.values().copied().min().unwrap_or(0);
        if checkpoints.len() < index.segments.len() {
            after = floor;
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
                let kept: &mut RoaringBitmap = members.entry(entry.segment_id.clone()).or_default();
                kept.extend(entry.entered.iter().map(|(dense, _)| *dense));
                for (dense, _) in &entry.left {
                    kept.remove(*dense);
                }
                *since_checkpoint.entry(entry.segment_id).or_default() +=
                    (entry.entered.len() + entry.left.len()) as u64;
                last_instant = last_instant.max(entry.time);
            }
            after = last;
        }

        if let Some((_, newest)) = store
            .feed_entries(tenant, head.saturating_sub(1), 1)?
            .first()
        {
            last_instant = last_instant.max(newest.time);
        }

        let feed = Feed::with_state(FeedState {
            members,
            dependencies: Dependencies::build(index),
            head,
            head_stored: stored_head.is_some(),
            since_checkpoint,
            stale: BTreeSet::new(),
            last_instant,
            last_prune: Seconds::MIN,
            start,
        });
        feed.floor
            .store(floor, std::sync::atomic::Ordering::Release);
        Ok(feed)
    }

    /// The last sequence known durable.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    fn floor(&self) -> u64 {
        self.floor.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
