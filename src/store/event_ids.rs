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
//! it waits instead of growing the pending set without end; should the
//! thread be gone, the writer indexes its ids itself.
//!
//! An `I` row's value is each id as a length (u16) and its bytes.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::keys;
use crate::error::{Error, Result};

/// Batches that may wait for the thread before a writer waits too; also
/// the most one round of the thread takes before it flushes.
const QUEUED_BATCHES: usize = 64;

/// The ids of batches committed but not yet indexed, by tenant.
type Pending = Arc<Mutex<HashMap<String, HashSet<String>>>>;

enum Job {
    /// Index the ids of a tenant's batch, then remove its `I` row.
    Index {
        tenant: String,
        sequence: u64,
        ids: Vec<String>,
    },
    /// Answer once every job before this one is indexed and on disk, or
    /// with the error that keeps it from being so.
    Barrier(SyncSender<Result<(), String>>),
}

/// The pending ids and the thread that indexes them.
pub struct EventIds {
    db: sled::Db,
    pending: Pending,
    queue: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl EventIds {
    /// Starts the indexing thread on `db`.
    pub fn start(db: sled::Db) -> Result<EventIds> {
        let pending = Pending::default();
        let (queue, jobs) = sync_channel(QUEUED_BATCHES);
        let thread = std::thread::Builder::new()
            .name("event-id-index".into())
            .spawn({
                let (db, pending) = (db.clone(), pending.clone());
                move || run(&db, &pending, &jobs)
            })
            .map_err(|error| Error::Internal(format!("starting the event-id index: {error}")))?;
        Ok(EventIds {
            db,
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
        let job = Job::Index {
            tenant: tenant.to_owned(),
            sequence,
            ids,
        };
        if let Err(returned) = self.send(job) {
            // Without the thread (it only stops on a panic), index here, so
            // the pending set cannot grow without end. On failure the ids
            // stay pending, and the `I` row stays for the next start.
            if let Job::Index { tenant, ids, .. } = returned
                && insert(&self.db, &tenant, &ids).is_ok()
            {
                unpend(&self.pending, &tenant, &ids);
            }
        }
    }

    /// Waits until every id handed over so far is an `E` row on disk.
    pub fn drain(&self) -> Result<()> {
        let (done, wait) = sync_channel(1);
        if self.send(Job::Barrier(done)).is_err() {
            return Err(Error::Internal(
                "the event-id index thread has stopped".into(),
            ));
        }
        match wait.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Error::Internal(format!("indexing event ids: {error}"))),
            Err(_) => Err(Error::Internal(
                "the event-id index thread has stopped".into(),
            )),
        }
    }

    /// Queues a job; gives it back if the thread is gone.
    fn send(&self, job: Job) -> std::result::Result<(), Job> {
        let Some(queue) = &self.queue else {
            return Err(job);
        };
        queue.send(job).map_err(|returned| {
            tracing::error!("the event-id index thread has stopped");
            returned.0
        })
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

fn unpend(pending: &Pending, tenant: &str, ids: &[String]) {
    let mut pending = lock(pending);
    if let Some(set) = pending.get_mut(tenant) {
        for id in ids {
            set.remove(id);
        }
        if set.is_empty() {
            pending.remove(tenant);
        }
    }
}

/// The thread, in rounds: it takes up to `QUEUED_BATCHES` jobs (a barrier
/// ends the round), inserts their `E` rows, flushes once for all of them,
/// then removes their `I` rows. A job that fails is tried again next round.
fn run(db: &sled::Db, pending: &Pending, jobs: &Receiver<Job>) {
    let mut retry: Vec<Job> = Vec::new();
    loop {
        let mut round: Vec<Job> = std::mem::take(&mut retry);
        if round.is_empty() {
            match jobs.recv() {
                Ok(job) => round.push(job),
                // The queue is closed and empty: the store is gone.
                Err(_) => return,
            }
        }
        while round.len() < QUEUED_BATCHES
            && !matches!(round.last(), Some(Job::Barrier(_)))
            && let Ok(job) = jobs.try_recv()
        {
            round.push(job);
        }

        let mut done = Vec::new();
        let mut barriers = Vec::new();
        let mut failure: Option<String> = None;
        for job in round {
            match job {
                Job::Index {
                    tenant,
                    sequence,
                    ids,
                } => match insert(db, &tenant, &ids) {
                    Ok(()) => {
                        // Visible as `E` rows now, so no longer pending.
                        unpend(pending, &tenant, &ids);
                        done.push(keys::event_ids_key(&tenant, sequence));
                    }
                    Err(error) => {
                        tracing::error!(tenant, sequence, %error, "cannot index event ids");
                        failure = Some(error.to_string());
                        retry.push(Job::Index {
                            tenant,
                            sequence,
                            ids,
                        });
                    }
                },
                Job::Barrier(reply) => barriers.push(reply),
            }
        }
        match db.flush() {
            Ok(_) => {
                for key in done {
                    if let Err(error) = db.remove(key) {
                        tracing::error!(%error, "cannot remove an indexed batch's event ids");
                    }
                }
            }
            Err(error) => {
                // The `I` rows stay; the next start indexes them again.
                tracing::error!(%error, "cannot flush the event-id index");
                failure = Some(error.to_string());
            }
        }
        for reply in barriers {
            let _ = reply.send(failure.clone().map_or(Ok(()), Err));
        }
        if !retry.is_empty() {
            // A storage fault: give it a moment before trying again.
            std::thread::sleep(std::time::Duration::from_millis(100));
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
    }

    #[test]
    fn rows_cut_inside_an_id_or_a_length_are_refused() {
        let ids = vec!["e1".to_owned(), String::new(), "ü".repeat(100)];
        let row = encode(&ids).unwrap();
        // Rows: [0 2 e 1] [0 0] [0 200 ...]; cuts at 4 and 6 end between ids.
        for cut in (1..row.len()).filter(|cut| ![4, 6].contains(cut)) {
            assert!(decode(&row[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&row[..4]).unwrap(), ids[..1]);
    }
}
