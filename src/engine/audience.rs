//! Reading audiences whole: counts per rule node, streamed exports, the
//! overlap of several audiences, the difference between two, and the
//! segments one customer belongs to.

use roaring::RoaringBitmap;

use super::types::{Audience, AudienceCounts, AudienceDiff, NodeCount, Overlap};
use super::{Engine, read};
use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::index::eval::Evaluation;
use crate::store::keys::BitmapKey;
use crate::time::Seconds;

/// Most customer ids in one message of an export.
pub const EXPORT_CHUNK_IDS: usize = 10_000;
/// Most bytes of customer ids in one message of an export: well under
/// gRPC's usual 4 MiB limit on a received message, whatever the ids' length.
pub const EXPORT_CHUNK_BYTES: usize = 1 << 20;
/// Most audiences in one overlap.
pub const MAX_OVERLAP_AUDIENCES: usize = 8;

impl Engine {
    /// The size of an audience and of its members who are opted in; with
    /// `nodes`, the count of every node of its rule too.
    pub fn count_audience(
        &self,
        tenant: &str,
        audience: &Audience,
        instant: Seconds,
        nodes: bool,
    ) -> Result<AudienceCounts> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let evaluation = Evaluation::new(&index, &self.store, instant);
        let rule = match audience {
            Audience::Rule(rule) => Some(rule),
            Audience::Segment(segment_id) => index
                .segments
                .get(segment_id)
                .and_then(|segment| segment.rule.as_ref()),
            Audience::Snapshot(_) => None,
        };
        let mut counts = AudienceCounts::default();
        let members = match (nodes, audience, rule) {
            // An inline rule's root node is the audience: evaluate it once.
            (true, Audience::Rule(_), Some(rule)) => {
                let mut root = None;
                evaluation.each_node(rule, &mut |path, node, members| {
                    if path.is_empty() {
                        root = Some(members.clone());
                    }
                    counts.nodes.push(node_count(path, node, members));
                })?;
                root.unwrap_or_default()
            }
            (true, _, Some(rule)) => {
                evaluation.each_node(rule, &mut |path, node, members| {
                    counts.nodes.push(node_count(path, node, members));
                })?;
                self.evaluate_with(&evaluation, audience)?
            }
            _ => self.evaluate_with(&evaluation, audience)?,
        };
        counts.count = members.len();
        counts.sendable = members.intersection_len(index.bitmap(&BitmapKey::OptedIn));
        Ok(counts)
    }

    /// The member count and sendable count of saved segments, in the order given.
    pub fn segment_counts(
        &self,
        tenant: &str,
        segment_ids: &[String],
        instant: Seconds,
    ) -> Result<Vec<(u64, u64)>> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        // One evaluation, so that segments referring to each other cost once.
        let evaluation = Evaluation::new(&index, &self.store, instant);
        let opted_in = index.bitmap(&BitmapKey::OptedIn);
        segment_ids
            .iter()
            .map(|segment_id| {
                let members = evaluation.segment(segment_id)?;
                Ok((members.len(), members.intersection_len(opted_in)))
            })
            .collect()
    }

    /// Streams the customer ids of `members` (an audience evaluated by
    /// [`Engine::members`]) in dense-id order, in chunks, to `send`, which
    /// returns false to stop (the caller went away). The index is read a
    /// chunk at a time, so writers are never held up for the whole export.
    pub fn export(
        &self,
        tenant: &str,
        members: &RoaringBitmap,
        mut send: impl FnMut(Vec<String>, u64) -> bool,
    ) -> Result<()> {
        let tenant = self.tenant(tenant)?;
        let total = members.len();
        let mut remaining = members.iter().peekable();
        if remaining.peek().is_none() {
            send(Vec::new(), 0);
            return Ok(());
        }
        while remaining.peek().is_some() {
            let mut chunk = Vec::with_capacity(EXPORT_CHUNK_IDS.min(total as usize));
            let mut bytes = 0;
            {
                let index = read(&tenant.index);
                while chunk.len() < EXPORT_CHUNK_IDS && bytes < EXPORT_CHUNK_BYTES {
                    let Some(dense) = remaining.next() else { break };
                    // A customer deleted since the export began is left out.
                    if let Some(customer_id) = index.customer_id(dense) {
                        // The id and its field tag and length in the message.
                        bytes += customer_id.len() + 3;
                        chunk.push(customer_id.to_owned());
                    }
                }
            }
            if !send(chunk, total) {
                break;
            }
        }
        Ok(())
    }

    /// The sizes of several audiences and of their intersections.
    pub fn overlap(
        &self,
        tenant: &str,
        audiences: &[Audience],
        instant: Seconds,
    ) -> Result<Overlap> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let evaluation = Evaluation::new(&index, &self.store, instant);
        let sets = audiences
            .iter()
            .map(|audience| self.evaluate_with(&evaluation, audience))
            .collect::<Result<Vec<_>>>()?;
        let mut overlap = Overlap {
            counts: sets.iter().map(RoaringBitmap::len).collect(),
            ..Overlap::default()
        };
        for (first, a) in sets.iter().enumerate() {
            for (second, b) in sets.iter().enumerate().skip(first + 1) {
                overlap.pairs.push((first, second, a.intersection_len(b)));
            }
        }
        let mut sorted: Vec<&RoaringBitmap> = sets.iter().collect();
        sorted.sort_by_key(|set| set.len());
        let mut all = sorted.first().map(|set| (*set).clone()).unwrap_or_default();
        for set in sorted.iter().skip(1) {
            all &= *set;
        }
        overlap.intersection = all.len();
        let mut any = RoaringBitmap::new();
        for set in &sets {
            any |= set;
        }
        overlap.union = any.len();
        Ok(overlap)
    }

    /// Who joins (in `after` only) and who leaves (in `before` only), with
    /// the first `sample` of each in dense-id order.
    pub fn diff(
        &self,
        tenant: &str,
        before: &Audience,
        after: &Audience,
        instant: Seconds,
        sample: usize,
    ) -> Result<AudienceDiff> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let evaluation = Evaluation::new(&index, &self.store, instant);
        let was = self.evaluate_with(&evaluation, before)?;
        let will_be = self.evaluate_with(&evaluation, after)?;
        let joined = &will_be - &was;
        let left = &was - &will_be;
        Ok(AudienceDiff {
            before: was.len(),
            after: will_be.len(),
            joined: joined.len(),
            left: left.len(),
            joined_sample: customer_ids(&index, &joined, sample)?,
            left_sample: customer_ids(&index, &left, sample)?,
        })
    }

    /// The saved segments a customer belongs to, in segment id order.
    pub fn customer_segments(
        &self,
        tenant: &str,
        customer_id: &str,
        instant: Seconds,
        show_archived: bool,
    ) -> Result<Vec<String>> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let dense = live_customer(&index, customer_id)?;
        let evaluation = Evaluation::new(&index, &self.store, instant);
        let mut segment_ids = Vec::new();
        for (segment_id, segment) in &index.segments {
            if segment.record.archived && !show_archived {
                continue;
            }
            if evaluation.segment(segment_id)?.contains(dense) {
                segment_ids.push(segment_id.clone());
            }
        }
        Ok(segment_ids)
    }
}

fn node_count(path: &[usize], node: &crate::rule::Rule, members: &RoaringBitmap) -> NodeCount {
    NodeCount {
        path: path.to_vec(),
        rule_text: node.to_string(),
        count: members.len(),
    }
}

/// The dense id of a live customer, or `NOT_FOUND`.
pub(super) fn live_customer(index: &TenantIndex, customer_id: &str) -> Result<u32> {
    index
        .ids
        .get(customer_id)
        .ok_or_else(|| Error::NotFound(format!("customer `{customer_id}` not found")))
}

/// The merchant's ids of the first `limit` members of `members`.
fn customer_ids(index: &TenantIndex, members: &RoaringBitmap, limit: usize) -> Result<Vec<String>> {
    members
        .iter()
        .take(limit)
        .map(|dense| {
            index
                .customer_id(dense)
                .map(str::to_owned)
                .ok_or_else(|| Error::Internal(format!("live customer {dense} has no customer id")))
        })
        .collect()
}
