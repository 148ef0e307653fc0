//! The event-id index, kept off the write path.
//!
//! Exactly-once needs every applied event id, forever, and a row per id
//! (`E`) is the only layout that answers "seen before?" with one lookup.
//! Inserting those rows was a third of a batch's cost: sled splits a leaf
//! every 16 keys. So a batch's commit stores its ids as one `I` row, atomic
//! with the batch's effects, and a background thread turns that row into
//! `E` rows afterwards: it inserts them, flushes, and only then removes the
//! `I` row. Until then the ids are *pending*, held in memory, and a lookup
//! checks the pending ids before the `E` rows. An id is at every moment
//! pending, or an `E` row, or both.
//!
//! After a crash the `I` rows still on disk are pending again when their
//! tenant is loaded, and are indexed again (inserting an `E` row twice is
//! harmless). The queue to the thread is bounded, so a writer that outruns
//! it waits instead of growing the pending set without end.
//!
//! An `I` row's value is each id as a length (u16) and its bytes.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::keys;
use crate::error::{Error, Result};

/// Batches that may wait for the thread before a writer waits too.
const QUEUE: usize = 64;

/// The ids of batches committed but not yet indexed, by tenant.
type Pending = Arc<Mutex<HashMap<String, HashSet<String>>>>;

enum Job {
    /// Index the ids of a tenant's batch, then remove its `I` row.
    Index {
        tenant: String,
        sequence: u64,
        ids: Vec<String>,
    },
    /// Answer once every job before this one is indexed and on disk.
    Barrier(SyncSender<()>),
}

pub struct EventIds {
    pending: Pending,
    queue: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl EventIds {
    /// Starts the indexing thread on `db`.
    pub fn start(db: sled::Db) -> Result<EventIds> {
        let pending = Pending::default();
        let (queue, jobs) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("event-id-index".into())
            .spawn({
                let pending = pending.clone();
                move || run(&db, &pending, &jobs)
            })
            .map_err(|error| Error::Internal(format!("starting the event-id index: {error}")))?;
        Ok(EventIds {
            pending,
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Whether `event_id` is among a tenant's pending ids.
    pub fn is_pending(&self, tenant: &str, event_id: &str) -> bool {
        lock(&self.pending)
            .get(tenant)
            .is_some_and(|ids| ids.contains(event_id))
    }

    /// Hands over the ids of a batch whose `I` row is now durable.
    pub fn committed(&self, tenant: &str, sequence: u64, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        lock(&self.pending)
            .entry(tenant.to_owned())
            .or_default()
            .extend(ids.iter().cloned());
        self.send(Job::Index {
            tenant: tenant.to_owned(),
            sequence,
            ids,
        });
    }

    /// Waits until every id handed over so far is an `E` row on disk.
    pub fn drain(&self) {
        let (done, wait) = sync_channel(1);
        self.send(Job::Barrier(done));
        // A thread that is gone has nothing left to finish.
        let _ = wait.recv();
    }

    fn send(&self, job: Job) {
        if let Some(queue) = &self.queue
            && queue.send(job).is_err()
        {
            // The thread ended (it only does when the queue closes, or on a
            // panic); the ids stay pending and their `I` rows stay on disk.
            tracing::error!("the event-id index thread has stopped");
        }
    }
}

impl Drop for EventIds {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has done its jobs.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread: takes the queued jobs, inserts their `E` rows, flushes once
/// for all of them, then removes their `I` rows.
fn run(db: &sled::Db, pending: &Pending, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut done = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Index {
                    tenant,
                    sequence,
                    ids,
                } => match insert(db, &tenant, &ids) {
                    Ok(()) => {
                        // Visible as `E` rows now, so no longer pending.
                        let mut pending = lock(pending);
                        if let Some(set) = pending.get_mut(&tenant) {
                            for id in &ids {
                                set.remove(id);
                            }
                            if set.is_empty() {
                                pending.remove(&tenant);
                            }
                        }
                        done.push(keys::event_ids_key(&tenant, sequence));
                    }
                    Err(error) => {
                        tracing::error!(tenant, sequence, %error, "cannot index event ids; they stay pending");
                    }
                },
                Job::Barrier(reply) => barriers.push(reply),
            }
            next = jobs.try_recv().ok();
        }
        let flushed = db.flush();
        match flushed {
            Ok(_) => {
                for key in done {
                    if let Err(error) = db.remove(key) {
                        tracing::error!(%error, "cannot remove an indexed batch's event ids");
                    }
                }
            }
            Err(error) => tracing::error!(%error, "cannot flush the event-id index"),
        }
        for reply in barriers {
            let _ = reply.send(());
        }
    }
}

fn insert(db: &sled::Db, tenant: &str, ids: &[String]) -> sled::Result<()> {
    for id in ids {
        db.insert(keys::event_id_key(tenant, id), &[])?;
    }
    Ok(())
}

/// Encodes a batch's event ids as an `I` row's value.
pub fn encode(ids: &[String]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(ids.iter().map(|id| id.len() + 2).sum());
    for id in ids {
        let length = u16::try_from(id.len())
            .map_err(|_| Error::Internal(format!("event id of {} bytes", id.len())))?;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    Ok(out)
}

/// Decodes an `I` row's value.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<String>> {
    let corrupt = || Error::Corrupt("a batch's event ids are damaged".into());
    let mut ids = Vec::new();
    while !bytes.is_empty() {
        let (length, rest) = bytes.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let length = u16::from_be_bytes(*length) as usize;
        let id = rest.get(..length).ok_or_else(corrupt)?;
        ids.push(String::from_utf8(id.to_vec()).map_err(|_| corrupt())?);
        bytes = &rest[length..];
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_decode_to_what_was_encoded() {
        let ids = vec!["e1".to_owned(), String::new(), "ü".repeat(100)];
        assert_eq!(decode(&encode(&ids).unwrap()).unwrap(), ids);
        let row = encode(&ids).unwrap();
        // Every cut that ends inside an id is refused.
        for cut in [1, 3, row.len() - 1] {
            assert!(decode(&row[..cut]).is_err(), "cut at {cut}");
        }
    }
}
