//! Saved segments: creating, reading and listing them.
//!
//! A segment's rule may refer to other segments; a reference must name a
//! segment that exists and is not archived, so a new segment can never be
//! part of a cycle.

use super::types::SegmentInput;
use std::collections::HashMap;
use std::sync::PoisonError;

use super::{Engine, Tenant, read};
use crate::error::{Error, Result};
use crate::index::eval::MAX_SEGMENT_DEPTH;
use crate::index::{SavedSegment, TenantIndex};
use crate::rule::{Predicate, Rule};
use crate::store::keys;
use crate::store::records::SegmentRecord;
use crate::store::{Batch, encode_json};

/// Segments one tenant may keep.
pub const MAX_SEGMENTS_PER_TENANT: usize = 10_000;

impl Engine {
    /// Saves a new segment under `segment_id`.
    pub fn create_segment(
        &self,
        tenant: &str,
        segment_id: &str,
        input: SegmentInput,
        now_micros: i64,
    ) -> Result<SegmentRecord> {
        let tenant = self.tenant(tenant)?;
        let writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let record = {
            let index = read(&tenant.index);
            if index.segments.contains_key(segment_id) {
                return Err(Error::AlreadyExists(format!(
                    "segment `{segment_id}` already exists"
                )));
            }
            if index.segments.len() >= MAX_SEGMENTS_PER_TENANT {
                return Err(Error::ResourceExhausted(format!(
                    "tenant `{}` already has {MAX_SEGMENTS_PER_TENANT} segments, the most it may keep",
                    index.tenant
                )));
            }
            if let Some(rule) = &input.rule {
                check_references(&index, rule)?;
                let chain = 1 + referenced_chain(&index, rule, &mut HashMap::new());
                if chain > MAX_SEGMENT_DEPTH {
                    return Err(Error::FailedPrecondition(format!(
                        "segment `{segment_id}` would end a chain of {chain} segments referring \
                         to each other; at most {MAX_SEGMENT_DEPTH} may nest"
                    )));
                }
            }
            SegmentRecord {
                segment_id: segment_id.to_owned(),
                title: input.title,
                rule_text: input.rule.as_ref().map(Rule::to_string).unwrap_or_default(),
                included_customer_ids: input.included_customer_ids,
                excluded_customer_ids: input.excluded_customer_ids,
                version: 1,
                archived: false,
                create_time_micros: now_micros,
                update_time_micros: now_micros,
            }
        };
        let head = self.save_segment(&tenant, record.clone(), input.rule)?;
        self.feed_publish_after(&tenant, writer, head);
        Ok(record)
    }

    /// Stores a segment durably, then shows it in the index and the change
    /// feed. Called with the tenant's writer lock held; returns the feed's
    /// head to publish once the lock is let go.
    pub(super) fn save_segment(
        &self,
        tenant: &Tenant,
        record: SegmentRecord,
        rule: Option<Rule>,
    ) -> Result<Option<u64>> {
        let name = read(&tenant.index).tenant.clone();
        let mut batch = Batch::default();
        batch.insert(
            keys::segment_key(&name, &record.segment_id),
            encode_json(&record)?,
        );
        self.store.commit(batch)?;
        let segment_id = record.segment_id.clone();
        let now = record.update_time_micros.div_euclid(1_000_000);
        // A new title or archiving moves no one: only a new definition
        // (rule or lists) is evaluated again.
        let redefined = read(&tenant.index)
            .segments
            .get(&segment_id)
            .is_none_or(|before| {
                let before = &before.record;
                before.rule_text != record.rule_text
                    || before.included_customer_ids != record.included_customer_ids
                    || before.excluded_customer_ids != record.excluded_customer_ids
            });
        tenant
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .segments
            .insert(segment_id.clone(), SavedSegment { record, rule });
        // The caller holds the writer lock, and publishes once it is let go.
        Ok(redefined
            .then(|| self.feed_after_segment_edit(tenant, &segment_id, now))
            .flatten())
    }

    /// One saved segment.
    pub fn get_segment(&self, tenant: &str, segment_id: &str) -> Result<SegmentRecord> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        index
            .segments
            .get(segment_id)
            .map(|segment| segment.record.clone())
            .ok_or_else(|| Error::NotFound(format!("segment `{segment_id}` not found")))
    }

    /// Up to `page_size` segments in id order after `after`, and whether more follow.
    pub fn list_segments(
        &self,
        tenant: &str,
        after: Option<&str>,
        page_size: usize,
        show_archived: bool,
    ) -> Result<(Vec<SegmentRecord>, bool)> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let mut listed = index
            .segments
            .iter()
            .filter(|(id, _)| after.is_none_or(|after| id.as_str() > after))
            .filter(|(_, segment)| show_archived || !segment.record.archived)
            .map(|(_, segment)| segment.record.clone());
        let page: Vec<SegmentRecord> = listed.by_ref().take(page_size).collect();
        let more = listed.next().is_some();
        Ok((page, more))
    }
}

/// The longest chain of segments that `rule` reaches through `segment = ...`
/// references (0 when it refers to none).
pub(super) fn referenced_chain(
    index: &TenantIndex,
    rule: &Rule,
    known: &mut HashMap<String, usize>,
) -> usize {
    match rule {
        Rule::And(children) | Rule::Or(children) => children
            .iter()
            .map(|child| referenced_chain(index, child, known))
            .max()
            .unwrap_or(0),
        Rule::Not(child) => referenced_chain(index, child, known),
        Rule::Predicate(Predicate::Segment(segment_id)) => {
            if let Some(&chain) = known.get(segment_id) {
                return chain;
            }
            // Stored segments form no cycle (a reference must exist first),
            // so this recursion ends; `known` makes it linear.
            let chain = 1 + index
                .segments
                .get(segment_id)
                .and_then(|segment| segment.rule.as_ref())
                .map_or(0, |rule| referenced_chain(index, rule, known));
            known.insert(segment_id.clone(), chain);
            chain
        }
        Rule::Predicate(_) => 0,
    }
}

/// Refuses a rule that refers to a missing or archived segment.
pub(super) fn check_references(index: &TenantIndex, rule: &Rule) -> Result<()> {
    match rule {
        Rule::And(children) | Rule::Or(children) => children
            .iter()
            .try_for_each(|child| check_references(index, child)),
        Rule::Not(child) => check_references(index, child),
        Rule::Predicate(Predicate::Segment(segment_id)) => match index.segments.get(segment_id) {
            None => Err(Error::FailedPrecondition(format!(
                "the rule refers to segment `{segment_id}`, which does not exist"
            ))),
            Some(segment) if segment.record.archived => Err(Error::FailedPrecondition(format!(
                "the rule refers to segment `{segment_id}`, which is archived"
            ))),
            Some(_) => Ok(()),
        },
        Rule::Predicate(_) => Ok(()),
    }
}
