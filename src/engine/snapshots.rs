//! Snapshots: an audience frozen at one instant, for a broadcast that must
//! go to exactly the audience that was previewed.
//!
//! A snapshot stores its members' dense ids. Dense ids are never reused, so
//! the stored set keeps meaning the same customers; a customer deleted
//! since leaves the snapshot (its data is gone) when the set is read, as
//! it is intersected with the live customers.

use std::sync::PoisonError;

use super::types::Audience;
use super::{Engine, read};
use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::store::records::SnapshotRecord;
use crate::store::{Batch, encode_json, keys};
use crate::time::Seconds;

/// Snapshots one tenant may keep.
pub const MAX_SNAPSHOTS_PER_TENANT: usize = 10_000;

/// A snapshot and its members now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub record: SnapshotRecord,
    /// Members now: those taken, less customers deleted since.
    pub count: u64,
}

/// A new snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInput {
    /// `None`: segmentd picks one.
    pub snapshot_id: Option<String>,
    pub title: String,
    /// A rule or a saved segment; never a snapshot.
    pub audience: Audience,
    pub as_of: Seconds,
}

impl Engine {
    /// Evaluates an audience and stores its members durably as a snapshot.
    pub fn create_snapshot(
        &self,
        tenant: &str,
        input: SnapshotInput,
        now_micros: i64,
    ) -> Result<SnapshotInfo> {
        let name = tenant;
        let tenant = self.tenant(name)?;
        let (rule_text, segment_id) = match &input.audience {
            Audience::Rule(rule) => (rule.to_string(), String::new()),
            Audience::Segment(segment_id) => (String::new(), segment_id.clone()),
            Audience::Snapshot(_) => {
                return Err(Error::invalid(
                    "audience",
                    "a snapshot is taken of a rule or a segment, not of a snapshot",
                ));
            }
        };
        // The audience as of now; writes that land before it is stored do
        // not change what was taken, so writers are not held up meanwhile.
        let members = {
            let index = read(&tenant.index);
            self.evaluate(&index, &input.audience, input.as_of)?
        };
        // The writer lock serialises snapshot ids and the limit.
        let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let record = {
            let index = read(&tenant.index);
            if index.snapshots.len() >= MAX_SNAPSHOTS_PER_TENANT {
                return Err(Error::ResourceExhausted(format!(
                    "tenant `{}` already has {MAX_SNAPSHOTS_PER_TENANT} snapshots, the most it \
                     may keep; delete some",
                    index.tenant
                )));
            }
            let snapshot_id = match input.snapshot_id {
                Some(snapshot_id) if index.snapshots.contains_key(&snapshot_id) => {
                    return Err(Error::AlreadyExists(format!(
                        "snapshot `{snapshot_id}` already exists"
                    )));
                }
                Some(snapshot_id) => snapshot_id,
                None => fresh_id(&index, now_micros),
            };
            SnapshotRecord {
                snapshot_id,
                title: input.title,
                rule_text,
                segment_id,
                as_of: input.as_of,
                create_time_micros: now_micros,
                taken_count: members.len(),
            }
        };

        let mut bytes = Vec::with_capacity(members.serialized_size());
        members
            .serialize_into(&mut bytes)
            .map_err(|error| Error::Internal(format!("serialising a snapshot: {error}")))?;
        let mut batch = Batch::default();
        batch.insert(
            keys::snapshot_key(name, &record.snapshot_id),
            encode_json(&record)?,
        );
        batch.insert(keys::snapshot_members_key(name, &record.snapshot_id), bytes);
        self.store.commit(batch)?;
        tenant
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshots
            .insert(record.snapshot_id.clone(), record.clone());
        Ok(SnapshotInfo {
            count: record.taken_count,
            record,
        })
    }

    /// One snapshot, with its count now.
    pub fn get_snapshot(&self, tenant: &str, snapshot_id: &str) -> Result<SnapshotInfo> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let record = index
            .snapshots
            .get(snapshot_id)
            .ok_or_else(|| Error::NotFound(format!("snapshot `{snapshot_id}` not found")))?;
        self.snapshot_info(&index, record)
    }

    /// Up to `page_size` snapshots in id order after `after`, and whether more follow.
    pub fn list_snapshots(
        &self,
        tenant: &str,
        after: Option<&str>,
        page_size: usize,
    ) -> Result<(Vec<SnapshotInfo>, bool)> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let mut listed = index
            .snapshots
            .values()
            .filter(|record| after.is_none_or(|after| record.snapshot_id.as_str() > after));
        let page = listed
            .by_ref()
            .take(page_size)
            .map(|record| self.snapshot_info(&index, record))
            .collect::<Result<Vec<_>>>()?;
        let more = listed.next().is_some();
        Ok((page, more))
    }

    /// Deletes a snapshot and its members.
    pub fn delete_snapshot(&self, tenant: &str, snapshot_id: &str) -> Result<()> {
        let tenant = self.tenant(tenant)?;
        let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let name = {
            let index = read(&tenant.index);
            if !index.snapshots.contains_key(snapshot_id) {
                return Err(Error::NotFound(format!(
                    "snapshot `{snapshot_id}` not found"
                )));
            }
            index.tenant.clone()
        };
        let mut batch = Batch::default();
        batch.remove(keys::snapshot_key(&name, snapshot_id));
        batch.remove(keys::snapshot_members_key(&name, snapshot_id));
        self.store.commit(batch)?;
        tenant
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshots
            .remove(snapshot_id);
        Ok(())
    }

    fn snapshot_info(&self, index: &TenantIndex, record: &SnapshotRecord) -> Result<SnapshotInfo> {
        let members = self
            .store
            .snapshot_members(&index.tenant, &record.snapshot_id)?;
        Ok(SnapshotInfo {
            count: members.intersection_len(index.live()),
            record: record.clone(),
        })
    }
}

/// A snapshot id not yet used in the tenant, from the creation time:
/// `snap-` and the microseconds in base 36, so later ids sort later.
fn fresh_id(index: &TenantIndex, now_micros: i64) -> String {
    let mut micros = now_micros.max(0) as u64;
    loop {
        let id = format!("snap-{}", base36(micros));
        if !index.snapshots.contains_key(&id) {
            return id;
        }
        micros += 1;
    }
}

fn base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
