//! Editing saved segments: updates guarded by the version the editor read,
//! archiving and restoring. References between segments never form a
//! cycle, and a live segment never refers to an archived one.

use std::collections::HashMap;
use std::sync::PoisonError;

use super::segments::{check_references, referenced_chain};
use super::{Engine, read};
use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::index::eval::MAX_SEGMENT_DEPTH;
use crate::rule::{Predicate, Rule};
use crate::store::records::SegmentRecord;

/// What an update changes; `None` leaves a part as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentChanges {
    pub title: Option<String>,
    /// `Some(None)` leaves the segment with its include list only.
    pub rule: Option<Option<Rule>>,
    pub included_customer_ids: Option<Vec<String>>,
    pub excluded_customer_ids: Option<Vec<String>>,
}

impl Engine {
    /// Applies `changes` to a segment whose current version is `read_version`.
    pub fn update_segment(
        &self,
        tenant: &str,
        segment_id: &str,
        read_version: u64,
        changes: SegmentChanges,
        now_micros: i64,
    ) -> Result<SegmentRecord> {
        let tenant = self.tenant(tenant)?;
        let writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (record, rule) = {
            let index = read(&tenant.index);
            let current = existing(&index, segment_id)?;
            if current.record.version != read_version {
                return Err(Error::Aborted(format!(
                    "segment `{segment_id}` is at version {}, not {read_version}: read it again \
                     and reapply the change",
                    current.record.version
                )));
            }
            if current.record.archived {
                return Err(Error::FailedPrecondition(format!(
                    "segment `{segment_id}` is archived; unarchive it to edit it"
                )));
            }
            let rule = changes.rule.unwrap_or_else(|| current.rule.clone());
            if let Some(rule) = &rule {
                check_references(&index, rule)?;
                if let Some(path) = cycle_through(&index, segment_id, rule) {
                    return Err(Error::FailedPrecondition(format!(
                        "the rule would make a reference cycle: {}",
                        path.join(" → ")
                    )));
                }
                let chain = 1 + referenced_chain(&index, rule, &mut HashMap::new());
                let above = referrers_chain(&index, segment_id);
                if chain + above > MAX_SEGMENT_DEPTH {
                    return Err(Error::FailedPrecondition(format!(
                        "the rule would make a chain of {} segments referring to each other; \
                         at most {MAX_SEGMENT_DEPTH} may nest",
                        chain + above
                    )));
                }
            }
            let mut record = current.record.clone();
            if let Some(title) = changes.title {
                record.title = title;
            }
            record.rule_text = rule.as_ref().map(Rule::to_string).unwrap_or_default();
            if let Some(included) = changes.included_customer_ids {
                record.included_customer_ids = included;
            }
            if let Some(excluded) = changes.excluded_customer_ids {
                record.excluded_customer_ids = excluded;
            }
            if rule.is_none() && record.included_customer_ids.is_empty() {
                return Err(Error::invalid(
                    "segment.rule_text",
                    "give a rule, or at least one included customer",
                ));
            }
            record.version += 1;
            record.update_time_micros = now_micros;
            (record, rule)
        };
        let head = self.save_segment(&tenant, record.clone(), rule)?;
        self.feed_publish_after(&tenant, writer, head);
        Ok(record)
    }

    /// Archives a segment; refused while a live segment refers to it.
    pub fn archive_segment(
        &self,
        tenant: &str,
        segment_id: &str,
        now_micros: i64,
    ) -> Result<SegmentRecord> {
        self.set_archived(tenant, segment_id, true, now_micros)
    }

    /// Brings an archived segment back; refused while its rule refers to an
    /// archived segment.
    pub fn unarchive_segment(
        &self,
        tenant: &str,
        segment_id: &str,
        now_micros: i64,
    ) -> Result<SegmentRecord> {
        self.set_archived(tenant, segment_id, false, now_micros)
    }

    fn set_archived(
        &self,
        tenant: &str,
        segment_id: &str,
        archived: bool,
        now_micros: i64,
    ) -> Result<SegmentRecord> {
        let tenant = self.tenant(tenant)?;
        let writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (record, rule) = {
            let index = read(&tenant.index);
            let current = existing(&index, segment_id)?;
            if current.record.archived == archived {
                return Ok(current.record.clone());
            }
            if archived {
                let referrers = live_referrers(&index, segment_id);
                if !referrers.is_empty() {
                    return Err(Error::FailedPrecondition(format!(
                        "segment `{segment_id}` is still referred to by {}",
                        quoted(&referrers)
                    )));
                }
            } else if let Some(rule) = &current.rule {
                check_references(&index, rule)?;
            }
            let mut record = current.record.clone();
            record.archived = archived;
            record.version += 1;
            record.update_time_micros = now_micros;
            (record, current.rule.clone())
        };
        let head = self.save_segment(&tenant, record.clone(), rule)?;
        self.feed_publish_after(&tenant, writer, head);
        Ok(record)
    }
}

fn existing<'a>(
    index: &'a TenantIndex,
    segment_id: &str,
) -> Result<&'a crate::index::SavedSegment> {
    index
        .segments
        .get(segment_id)
        .ok_or_else(|| Error::NotFound(format!("segment `{segment_id}` not found")))
}

/// The segments a rule refers to directly, in order.
fn references(rule: &Rule, out: &mut Vec<String>) {
    match rule {
        Rule::And(children) | Rule::Or(children) => {
            children.iter().for_each(|c| references(c, out))
        }
        Rule::Not(child) => references(child, out),
        Rule::Predicate(Predicate::Segment(id)) => out.push(id.clone()),
        Rule::Predicate(_) => {}
    }
}

/// A path `segment_id → … → segment_id` if `rule`, as the rule of
/// `segment_id`, would reach `segment_id` again.
fn cycle_through(index: &TenantIndex, segment_id: &str, rule: &Rule) -> Option<Vec<String>> {
    fn walk(
        index: &TenantIndex,
        target: &str,
        current: &str,
        path: &mut Vec<String>,
        done: &mut std::collections::HashSet<String>,
    ) -> bool {
        if current == target {
            return true;
        }
        if !done.insert(current.to_owned()) {
            return false;
        }
        let mut next = Vec::new();
        if let Some(rule) = index.segments.get(current).and_then(|s| s.rule.as_ref()) {
            references(rule, &mut next);
        }
        for id in next {
            path.push(id.clone());
            if walk(index, target, &id, path, done) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut first = Vec::new();
    references(rule, &mut first);
    let mut done = std::collections::HashSet::new();
    for id in first {
        let mut path = vec![segment_id.to_owned(), id.clone()];
        if walk(index, segment_id, &id, &mut path, &mut done) {
            return Some(path);
        }
    }
    None
}

/// The longest chain of segments above `segment_id`: those that refer to
/// it, directly or through others (0 when none does).
fn referrers_chain(index: &TenantIndex, segment_id: &str) -> usize {
    fn depth(index: &TenantIndex, id: &str, known: &mut HashMap<String, usize>) -> usize {
        if let Some(&d) = known.get(id) {
            return d;
        }
        known.insert(id.to_owned(), 0);
        let d = all_referrers(index, id)
            .iter()
            .map(|referrer| 1 + depth(index, referrer, known))
            .max()
            .unwrap_or(0);
        known.insert(id.to_owned(), d);
        d
    }
    depth(index, segment_id, &mut HashMap::new())
}

/// Segments, archived or not, whose rule refers to `segment_id` directly.
fn all_referrers(index: &TenantIndex, segment_id: &str) -> Vec<String> {
    index
        .segments
        .iter()
        .filter(|(_, segment)| {
            let mut refs = Vec::new();
            if let Some(rule) = &segment.rule {
                references(rule, &mut refs);
            }
            refs.iter().any(|r| r == segment_id)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Live (not archived) segments whose rule refers to `segment_id` directly.
fn live_referrers(index: &TenantIndex, segment_id: &str) -> Vec<String> {
    all_referrers(index, segment_id)
        .into_iter()
        .filter(|id| index.segments.get(id).is_some_and(|s| !s.record.archived))
        .collect()
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
