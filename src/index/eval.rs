//! Resolves a rule to the bitmap of the customers it holds for, as set
//! algebra over the tenant's bitmaps.
//!
//! Every result is a subset of the live customers: `NOT x` is the live
//! customers minus `x`, never "every id ever handed out".

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use roaring::{MultiOps, RoaringBitmap};

use super::cache::{CacheKey, Family};
use super::{TenantIndex, bsi};
use crate::error::{Error, Result};
use crate::rule::{
    Comparison, EventKind, NumberField, NumberTest, Predicate, PresenceField, Rule, SetField,
    Window,
};
use crate::store::Store;
use crate::store::keys::{
    BitmapKey, NumberAttr, PRESENT_KLAVIYO_LIST, PRESENT_STATE, PRESENT_TAG, PRESENT_TIMEZONE,
    event_kind_code,
};
use crate::time::{self, DayNumber, Seconds, TimeRange};

/// A costly clause, for the cache.
enum Costly {
    /// It holds no one (an empty window, no events of its kind).
    Nobody,
    /// Its cache key, and the families of bitmaps it reads.
    Reads(CacheKey, Vec<Family>),
}

/// A bitmap of the index, or one shared with the clause cache.
enum Held<'a> {
    Ref(&'a RoaringBitmap),
    Shared(Arc<RoaringBitmap>),
}

impl std::ops::Deref for Held<'_> {
    type Target = RoaringBitmap;

    fn deref(&self) -> &RoaringBitmap {
        match self {
            Held::Ref(bitmap) => bitmap,
            Held::Shared(bitmap) => bitmap,
        }
    }
}

impl Held<'_> {
    fn into_owned(self) -> RoaringBitmap {
        match self {
            Held::Ref(bitmap) => bitmap.clone(),
            Held::Shared(bitmap) => Arc::unwrap_or_clone(bitmap),
        }
    }
}

/// Candidates below this many get a costly clause computed on them alone
/// the first time, not over everyone for the cache.
const SMALL_CANDIDATES: u64 = 2_048;

/// How deep `segment = "..."` references may nest: a segment may refer to
/// one that refers to another, and so on, this many segments in all.
pub const MAX_SEGMENT_DEPTH: usize = 16;

/// What a rule is evaluated against.
pub struct Evaluation<'a> {
    pub index: &'a TenantIndex,
    pub store: &'a Store,
    /// The evaluation instant: moves `WITHIN` and `SINCE` only.
    pub instant: Seconds,
    /// Members of the segments evaluated so far.
    segments_seen: RefCell<HashMap<String, RoaringBitmap>>,
    /// Clauses this evaluation computed on a few candidates, told to the
    /// cache once each.
    small_misses: RefCell<HashSet<CacheKey>>,
}

impl<'a> Evaluation<'a> {
    /// An evaluation of rules over `index` at `instant`.
    pub fn new(index: &'a TenantIndex, store: &'a Store, instant: Seconds) -> Self {
        Evaluation {
            index,
            store,
            instant,
            segments_seen: RefCell::default(),
            small_misses: RefCell::default(),
        }
    }
}

impl Evaluation<'_> {
    /// The live customers for whom `rule` holds.
    pub fn rule(&self, rule: &Rule) -> Result<RoaringBitmap> {
        self.node(rule, 0, self.index.live())
    }

    /// The live members of a saved segment: `(rule ∪ included) − excluded`.
    pub fn segment(&self, segment_id: &str) -> Result<RoaringBitmap> {
        let mut result = self.segment_members(segment_id, 0)?;
        result &= self.index.live();
        Ok(result)
    }

    /// The members of a saved segment among `candidates`.
    pub fn segment_among(
        &self,
        segment_id: &str,
        candidates: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        let candidates = candidates & self.index.live();
        let mut members = self.defined_members(self.saved(segment_id)?, 1, &candidates)?;
        members &= &candidates;
        Ok(members)
    }

    /// Visits every node of `rule`, root first and depth-first, with the
    /// node's path (child positions from the root) and its live members,
    /// each node evaluated as if it were the whole rule. Each node is
    /// evaluated once: a parent combines its children's results.
    pub fn each_node(
        &self,
        rule: &Rule,
        visit: &mut dyn FnMut(&[usize], &Rule, &RoaringBitmap),
    ) -> Result<()> {
        let mut path = Vec::new();
        let mut visits = Vec::new();
        self.walk(rule, &mut path, &mut visits)?;
        // `walk` records parents after their children; show them first.
        visits.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, node, members) in &visits {
            visit(path, node, members);
        }
        Ok(())
    }

    fn walk<'r>(
        &self,
        rule: &'r Rule,
        path: &mut Vec<usize>,
        visits: &mut Vec<(Vec<usize>, &'r Rule, RoaringBitmap)>,
    ) -> Result<RoaringBitmap> {
        let mut members = match rule {
            Rule::And(children) | Rule::Or(children) => {
                let mut combined: Option<RoaringBitmap> = None;
                for (position, child) in children.iter().enumerate() {
                    path.push(position);
                    let part = self.walk(child, path, visits);
                    path.pop();
                    let part = part?;
                    combined = Some(match (combined, rule) {
                        (None, _) => part,
                        (Some(so_far), Rule::And(_)) => so_far & part,
                        (Some(so_far), _) => so_far | part,
                    });
                }
                combined.unwrap_or_default()
            }
            Rule::Not(child) => {
                path.push(0);
                let inner = self.walk(child, path, visits);
                path.pop();
                self.index.live() - inner?
            }
            Rule::Predicate(predicate) => self.predicate(predicate, 0, self.index.live())?,
        };
        members &= self.index.live();
        visits.push((path.clone(), rule, members.clone()));
        Ok(members)
    }

    /// A segment's members, each segment evaluated once per evaluation: a
    /// segment referred to many times (or through many paths) costs once.
    fn segment_members(&self, segment_id: &str, depth: usize) -> Result<RoaringBitmap> {
        if let Some(members) = self.segments_seen.borrow().get(segment_id) {
            return Ok(members.clone());
        }
        if depth >= MAX_SEGMENT_DEPTH {
            return Err(Error::FailedPrecondition(format!(
                "segment references nest deeper than {MAX_SEGMENT_DEPTH} levels at `{segment_id}`"
            )));
        }
        let segment = self.saved(segment_id)?;
        let members = self.defined_members(segment, depth + 1, self.index.live())?;
        self.segments_seen
            .borrow_mut()
            .insert(segment_id.to_owned(), members.clone());
        Ok(members)
    }

    fn saved(&self, segment_id: &str) -> Result<&crate::index::SavedSegment> {
        self.index
            .segments
            .get(segment_id)
            .ok_or_else(|| Error::NotFound(format!("segment `{segment_id}` not found")))
    }

    /// `(rule ∪ included) − excluded` of a segment, the rule evaluated on
    /// `candidates`.
    fn defined_members(
        &self,
        segment: &crate::index::SavedSegment,
        depth: usize,
        candidates: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        let mut members = match &segment.rule {
            Some(rule) => self.node(rule, depth, candidates)?,
            None => RoaringBitmap::new(),
        };
        members |= self.customers(&segment.record.included_customer_ids);
        members -= self.customers(&segment.record.excluded_customer_ids);
        Ok(members)
    }

    /// The customers of `candidates` for whom `rule` holds (`candidates`
    /// is always a subset of the live customers).
    ///
    /// An AND evaluates its cheapest and most selective clauses first and
    /// hands their survivors to the next as its candidates, so the costly
    /// clauses (bit-sliced ranges, time windows) look only at customers
    /// still in the running; an OR hands its costly clauses only the
    /// customers not already in.
    fn node(&self, rule: &Rule, depth: usize, candidates: &RoaringBitmap) -> Result<RoaringBitmap> {
        // A caller past its deadline, or gone, gets no more of this.
        crate::cancel::check()?;
        match rule {
            Rule::And(children) => {
                let mut order: Vec<&Rule> = children.iter().collect();
                order.sort_by_cached_key(|child| self.cost(child));
                let mut survivors: Option<RoaringBitmap> = None;
                for child in order {
                    let within = survivors.as_ref().unwrap_or(candidates);
                    // A clause known over everyone cuts the survivors in
                    // place; any other is evaluated on them.
                    let part = match self.whole(child, within.len())? {
                        // The first clause over everyone: that is the survivors.
                        Some((all, false))
                            if survivors.is_none()
                                && std::ptr::eq(candidates, self.index.live()) =>
                        {
                            all.into_owned()
                        }
                        Some((all, negated)) => {
                            let mut part = survivors.take().unwrap_or_else(|| candidates.clone());
                            if negated {
                                part -= &*all;
                            } else {
                                part &= &*all;
                            }
                            part
                        }
                        None => self.node(child, depth, within)?,
                    };
                    let done = part.is_empty();
                    survivors = Some(part);
                    if done {
                        break;
                    }
                }
                Ok(survivors.unwrap_or_else(|| candidates.clone()))
            }
            Rule::Or(children) => {
                let mut order: Vec<&Rule> = children.iter().collect();
                order.sort_by_cached_key(|child| self.cost(child));
                let mut result = RoaringBitmap::new();
                for child in order {
                    if self.cost(child).0 >= Cost::Window && !result.is_empty() {
                        let rest = candidates - &result;
                        if rest.is_empty() {
                            break;
                        }
                        result |= self.node(child, depth, &rest)?;
                    } else {
                        result |= self.node(child, depth, candidates)?;
                    }
                }
                Ok(result)
            }
            Rule::Not(child) => match self.whole(child, candidates.len())? {
                // Whole bitmaps hold live customers only: take it away whole.
                Some((all, false)) => Ok(candidates - &*all),
                Some((all, true)) => Ok(candidates & &*all),
                None => Ok(candidates - self.node(child, depth, candidates)?),
            },
            Rule::Predicate(predicate) => self.predicate(predicate, depth, candidates),
        }
    }

    /// How costly a clause is to evaluate, then how many customers it may
    /// hold (fewer first): the order an AND evaluates its clauses in.
    fn cost(&self, rule: &Rule) -> (Cost, u64) {
        let index = self.index;
        match rule {
            Rule::Predicate(predicate) => match predicate {
                Predicate::OptedIn => (Cost::Bitmap, index.bitmap(&BitmapKey::OptedIn).len()),
                Predicate::Set { field, values } => (
                    Cost::Bitmap,
                    values
                        .iter()
                        .map(|value| index.bitmap(&set_key(*field, value)).len())
                        .sum(),
                ),
                Predicate::Customers(ids) => (Cost::Bitmap, ids.len() as u64),
                Predicate::Answered { .. } | Predicate::Presence { .. } => (Cost::Bitmap, u64::MAX),
                Predicate::Event {
                    kind,
                    broadcast,
                    window: None,
                } => (
                    Cost::Bitmap,
                    index
                        .bitmap(&event_any_key(*kind, broadcast.as_deref()))
                        .len(),
                ),
                Predicate::Segment(_) => (Cost::Segment, u64::MAX),
                Predicate::Event { .. } | Predicate::Number { .. } | Predicate::Created(_)
                    if let Some(len) = self.cached_len(predicate) =>
                {
                    (Cost::Cached, len)
                }
                Predicate::Event { .. } => (Cost::Window, u64::MAX),
                Predicate::Number { .. } | Predicate::Created(_) => (Cost::Range, u64::MAX),
            },
            Rule::Not(child) => match self.cost(child) {
                (cost @ (Cost::Bitmap | Cost::Cached), len) if len != u64::MAX => {
                    (cost, index.live().len().saturating_sub(len))
                }
                (cost, _) => (cost, u64::MAX),
            },
            // At most the smallest child (AND) or the sum of them (OR).
            Rule::And(children) | Rule::Or(children) => {
                let costs: Vec<(Cost, u64)> = children.iter().map(|c| self.cost(c)).collect();
                let class = costs.iter().map(|c| c.0).max().unwrap_or(Cost::Bitmap);
                let lens = costs.iter().map(|c| c.1);
                let len = match rule {
                    Rule::And(_) => lens.min().unwrap_or(u64::MAX),
                    _ => lens.fold(0u64, u64::saturating_add),
                };
                (class, len)
            }
        }
    }

    fn predicate(
        &self,
        predicate: &Predicate,
        depth: usize,
        candidates: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        let index = self.index;
        if let Some(all) = self.whole_predicate(predicate, candidates.len())? {
            // Every whole bitmap is a subset of the live customers.
            return Ok(if std::ptr::eq(candidates, index.live()) {
                all.into_owned()
            } else {
                &*all & candidates
            });
        }
        Ok(match predicate {
            Predicate::Event {
                kind,
                broadcast,
                window: Some(window),
            } => match self.window_plan(*kind, broadcast.as_deref(), window) {
                Some(plan) => {
                    self.window_members(*kind, broadcast.as_deref(), plan.1, plan.2, candidates)?
                }
                None => RoaringBitmap::new(),
            },
            // `stored` answered these above.
            Predicate::OptedIn
            | Predicate::Answered { .. }
            | Predicate::Set { .. }
            | Predicate::Event { window: None, .. } => {
                return Err(Error::Internal(format!("{predicate:?} is not stored")));
            }
            Predicate::Number { field, test } => self.number(*field, *test, candidates),
            Predicate::Created(window) => match self.created_test(window) {
                Some(test) => bsi::select(index, NumberAttr::Created, candidates, test),
                None => RoaringBitmap::new(),
            },
            Predicate::Customers(customer_ids) => self.customers(customer_ids) & candidates,
            Predicate::Segment(segment_id) => self.segment_members(segment_id, depth)? & candidates,
            Predicate::Presence { field, is_set } => {
                let present = index.bitmap(&presence_key(*field));
                if *is_set {
                    present & candidates
                } else {
                    candidates - present
                }
            }
        })
    }

    /// A clause over everyone, and whether it is negated, when that needs
    /// no work on the candidates (see `whole_predicate`).
    fn whole(&self, rule: &Rule, candidates: u64) -> Result<Option<(Held<'_>, bool)>> {
        Ok(match rule {
            Rule::Predicate(predicate) => self
                .whole_predicate(predicate, candidates)?
                .map(|all| (all, false)),
            Rule::Not(child) => match child.as_ref() {
                Rule::Predicate(predicate) => self
                    .whole_predicate(predicate, candidates)?
                    .map(|all| (all, true)),
                _ => None,
            },
            _ => None,
        })
    }

    /// The customers of a clause over everyone: a stored bitmap, a union
    /// of a few (`IN`, cached), or a costly clause (ranges, windows) from the
    /// cache or computed for everyone and cached. `None` when the clause is
    /// cheaper on `candidates` candidates alone, or is of another kind.
    fn whole_predicate(&self, predicate: &Predicate, candidates: u64) -> Result<Option<Held<'_>>> {
        if let Some(stored) = self.stored(predicate) {
            return Ok(Some(stored));
        }
        let (key, reads) = match self.costly(predicate) {
            None => return Ok(None),
            Some(Costly::Nobody) => return Ok(Some(Held::Shared(Arc::default()))),
            Some(Costly::Reads(key, reads)) => (key, reads),
        };
        self.cached(key, &reads, candidates, |all| match predicate {
            Predicate::Number { field, test } => Ok(self.number(*field, *test, all)),
            Predicate::Created(window) => Ok(match self.created_test(window) {
                Some(test) => bsi::select(self.index, NumberAttr::Created, all, test),
                None => RoaringBitmap::new(),
            }),
            Predicate::Event {
                kind,
                broadcast,
                window: Some(window),
            } => match self.window_plan(*kind, broadcast.as_deref(), window) {
                Some((_, range, clamped)) => {
                    self.window_members(*kind, broadcast.as_deref(), range, clamped, all)
                }
                None => Ok(RoaringBitmap::new()),
            },
            _ => Err(Error::Internal(format!("{predicate:?} is not cached"))),
        })
    }

    /// For a costly clause (a range, a window, a creation window): its
    /// cache key and what it reads. `None` for other clauses.
    fn costly(&self, predicate: &Predicate) -> Option<Costly> {
        let found = match predicate {
            Predicate::Number { field, test } => {
                let key = CacheKey::Number {
                    field: *field,
                    test: *test,
                };
                let attr = number_attr(*field);
                // Spent and order counts are 0 for customers without orders,
                // and `!=` keeps the customers with no value: both read
                // who is live.
                let reads_live = matches!(field, NumberField::Spent | NumberField::OrderCount)
                    || matches!(test, NumberTest::Compare(Comparison::Ne, _));
                let reads = if reads_live {
                    vec![Family::Number(attr), Family::Live]
                } else {
                    vec![Family::Number(attr)]
                };
                Some((key, reads))
            }
            Predicate::Created(window) => self.created_test(window).map(|test| {
                let reads = vec![Family::Number(NumberAttr::Created), Family::Live];
                (CacheKey::Created(test), reads)
            }),
            Predicate::Event {
                kind,
                broadcast,
                window: Some(window),
            } => self
                .window_plan(*kind, broadcast.as_deref(), window)
                .map(|(key, _, _)| (key, vec![Family::Event(*kind)])),
            _ => return None,
        };
        Some(match found {
            Some((key, reads)) => Costly::Reads(key, reads),
            None => Costly::Nobody,
        })
    }

    /// The size of a costly clause's result, when the cache holds it.
    fn cached_len(&self, predicate: &Predicate) -> Option<u64> {
        match self.costly(predicate)? {
            Costly::Nobody => Some(0),
            Costly::Reads(key, reads) => {
                let version = self.index.versions.of(&reads);
                self.index.cache.get(version, &key).map(|all| all.len())
            }
        }
    }

    /// The creation times a `created` window holds, as a test; `None` when
    /// it holds none.
    fn created_test(&self, window: &Window) -> Option<NumberTest> {
        let range = time::window_range(window, self.index.time_zone, self.instant);
        if range.is_empty() || range.to < 0 {
            None
        } else {
            Some(NumberTest::Between(
                range.from.max(0) as u64,
                range.to as u64,
            ))
        }
    }

    /// The customers of a clause that is a stored bitmap, or a union of
    /// a few (`IN`, cached), over everyone; `None` for the other clauses.
    fn stored(&self, predicate: &Predicate) -> Option<Held<'_>> {
        let index = self.index;
        let one = |key: &BitmapKey| Some(Held::Ref(index.bitmap(key)));
        match predicate {
            Predicate::OptedIn => one(&BitmapKey::OptedIn),
            Predicate::Event {
                kind,
                broadcast,
                window: None,
            } => one(&event_any_key(*kind, broadcast.as_deref())),
            Predicate::Answered {
                experience,
                question,
                answer,
            } => one(&match answer {
                None => BitmapKey::Answered {
                    experience: experience.clone(),
                    question: question.clone(),
                },
                Some(answer) => BitmapKey::Answer {
                    experience: experience.clone(),
                    question: question.clone(),
                    answer: answer.clone(),
                },
            }),
            Predicate::Set { field, values } => match values.as_slice() {
                [value] => one(&set_key(*field, value)),
                values => {
                    let key = CacheKey::Set(*field, values.to_vec());
                    let version = index.versions.of(&[Family::Set(*field)]);
                    if let Some(all) = index.cache.get(version, &key) {
                        return Some(Held::Shared(all));
                    }
                    let all = Arc::new(
                        values
                            .iter()
                            .map(|value| index.bitmap(&set_key(*field, value)))
                            .union(),
                    );
                    index.cache.insert(version, key, all.clone());
                    Some(Held::Shared(all))
                }
            },
            _ => None,
        }
    }

    /// `compute(candidates)`, from the tenant's cache of clause results when
    /// it holds this one. Else, unless the candidates are few, the clause is
    /// computed over every live customer and kept for the next count.
    fn cached(
        &self,
        key: CacheKey,
        reads: &[Family],
        candidates: u64,
        compute: impl Fn(&RoaringBitmap) -> Result<RoaringBitmap>,
    ) -> Result<Option<Held<'_>>> {
        let index = self.index;
        let version = index.versions.of(reads);
        if let Some(all) = index.cache.get(version, &key) {
            return Ok(Some(Held::Shared(all)));
        }
        // For a handful of candidates the clause is cheaper on them alone,
        // unless the same clause is asked for again over the same data.
        if candidates < SMALL_CANDIDATES {
            let first_here = self.small_misses.borrow_mut().insert(key.clone());
            if !first_here || !index.cache.missed_again(version, &key) {
                return Ok(None);
            }
        }
        let all = Arc::new(compute(index.live())?);
        index.cache.insert(version, key, all.clone());
        Ok(Some(Held::Shared(all)))
    }

    /// The customers of `candidates` whose number passes `test`.
    fn number(
        &self,
        field: NumberField,
        test: NumberTest,
        candidates: &RoaringBitmap,
    ) -> RoaringBitmap {
        let index = self.index;
        let (attr, base) = match field {
            // Always has a value: 0 without orders.
            NumberField::Spent => (NumberAttr::Spent, candidates.clone()),
            NumberField::OrderCount => (NumberAttr::OrderCount, candidates.clone()),
            NumberField::LifetimeSpend => (
                NumberAttr::LifetimeSpend,
                index.bitmap(&BitmapKey::Exists(NumberAttr::LifetimeSpend)) & candidates,
            ),
            NumberField::AbandonedCartValue => (
                NumberAttr::CartValue,
                index.bitmap(&BitmapKey::Exists(NumberAttr::CartValue)) & candidates,
            ),
        };
        match test {
            // `x != v` is `NOT x = v`: it keeps customers with no value.
            NumberTest::Compare(Comparison::Ne, value) => {
                let equal = bsi::select(
                    index,
                    attr,
                    &base,
                    NumberTest::Compare(Comparison::Eq, value),
                );
                candidates - equal
            }
            test => bsi::select(index, attr, &base, test),
        }
    }

    /// Customers with an event of `kind` (of one broadcast, for clicks)
    /// inside a window: whole local days from the day bitmaps, the partial
    /// days at the edges from the time index.
    /// What a window asks of the events of `kind`: its cache key, its
    /// range, and the range bounded by the kind's first and last events;
    /// `None` when it holds no event.
    fn window_plan(
        &self,
        kind: EventKind,
        broadcast: Option<&str>,
        window: &Window,
    ) -> Option<(CacheKey, TimeRange, TimeRange)> {
        let index = self.index;
        let tz = index.time_zone;
        let range = time::window_range(window, tz, self.instant);
        // Bounds of all events of the kind bound those of one broadcast too.
        let &(first_event, last_event) = index.meta.event_bounds.get(&event_kind_code(kind))?;
        let clamped = TimeRange {
            from: range.from.max(first_event),
            to: range.to.min(last_event),
        };
        if clamped.is_empty() {
            return None;
        }
        let key = CacheKey::Window {
            kind,
            broadcast: broadcast.map(str::to_owned),
            from: clamped.from,
            to: clamped.to,
        };
        Some((key, range, clamped))
    }

    /// The customers of `candidates` with an event in `range`, which
    /// `clamped` bounds by the kind's first and last events.
    fn window_members(
        &self,
        kind: EventKind,
        broadcast: Option<&str>,
        range: TimeRange,
        clamped: TimeRange,
        candidates: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        let index = self.index;
        let tz = index.time_zone;
        let Some(&(first_event, last_event)) = index.meta.event_bounds.get(&event_kind_code(kind))
        else {
            return Ok(RoaringBitmap::new());
        };

        // A day bitmap is exact for a day the range covers whole, and for an
        // edge day that has no events outside the range.
        let first_day = time::day_of(tz, clamped.from);
        let last_day = time::day_of(tz, clamped.to);
        let low_whole =
            range.from <= first_event || time::start_of_day(tz, first_day) >= range.from;
        let high_whole =
            range.to >= last_event || time::start_of_day(tz, last_day + 1) - 1 <= range.to;

        let payload = broadcast.map(str::as_bytes);
        let last_batch = index.meta.write_sequence;
        let mut result = RoaringBitmap::new();
        let (mut whole_from, mut whole_to) = (first_day, last_day);
        if !low_whole {
            let edge_end = clamped.to.min(time::start_of_day(tz, first_day + 1) - 1);
            let edge = TimeRange {
                from: clamped.from,
                to: edge_end,
            };
            result |= self
                .store
                .events_in(&index.tenant, kind, edge, payload, last_batch)?;
            whole_from = first_day + 1;
        }
        if !high_whole {
            if last_day >= whole_from {
                let edge_start = clamped.from.max(time::start_of_day(tz, last_day));
                let edge = TimeRange {
                    from: edge_start,
                    to: clamped.to,
                };
                result |= self
                    .store
                    .events_in(&index.tenant, kind, edge, payload, last_batch)?;
            }
            whole_to = last_day - 1;
        }

        let data_first = time::day_of(tz, first_event);
        let data_last = time::day_of(tz, last_event);
        result &= candidates;
        if whole_from <= data_first && whole_to >= data_last {
            result |= index.bitmap(&event_any_key(kind, broadcast)) & candidates;
        } else {
            let days = (whole_from..=whole_to)
                .filter_map(|day| index.bitmaps.get(&event_day_key(kind, broadcast, day)));
            // One many-way union, not a union per day: those grew the result
            // again for every day (quadratic over a long window). Few
            // candidates: cut each day down first; many: cut once at the end.
            let any = index.bitmap(&event_any_key(kind, broadcast));
            if candidates.len() < any.len() / 8 {
                result |= days.map(|day| day & candidates).union();
            } else {
                let mut whole = days.union();
                whole &= candidates;
                result |= whole;
            }
        }
        Ok(result)
    }

    fn customers(&self, customer_ids: &[String]) -> RoaringBitmap {
        customer_ids
            .iter()
            .filter_map(|customer_id| self.index.ids.get(customer_id))
            .collect()
    }
}

/// Classes of evaluation cost, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cost {
    /// One stored bitmap (or a union of a few).
    Bitmap,
    /// A costly clause the cache holds. After the stored bitmaps: those are
    /// mostly dense, and cutting dense bitmaps word by word first is
    /// cheaper than probing a smaller sparse result against each of them.
    Cached,
    /// A saved segment, evaluated once per evaluation.
    Segment,
    /// A time window: a union of day bitmaps and edge scans.
    Window,
    /// A bit-sliced range: work per candidate per bit.
    Range,
}

/// The bit-sliced number a numeric field is kept in.
pub fn number_attr(field: NumberField) -> NumberAttr {
    match field {
        NumberField::Spent => NumberAttr::Spent,
        NumberField::OrderCount => NumberAttr::OrderCount,
        NumberField::LifetimeSpend => NumberAttr::LifetimeSpend,
        NumberField::AbandonedCartValue => NumberAttr::CartValue,
    }
}

/// The bitmap of one value of a set-like field.
pub fn set_key(field: SetField, value: &str) -> BitmapKey {
    match field {
        SetField::Tag => BitmapKey::Tag(value.to_owned()),
        SetField::State => BitmapKey::State(value.to_owned()),
        SetField::Timezone => BitmapKey::Timezone(value.to_owned()),
        SetField::KlaviyoList => BitmapKey::KlaviyoList(value.to_owned()),
    }
}

/// The bitmap of customers that have a value of a field.
pub fn presence_key(field: PresenceField) -> BitmapKey {
    match field {
        PresenceField::Tag => BitmapKey::Present(PRESENT_TAG),
        PresenceField::State => BitmapKey::Present(PRESENT_STATE),
        PresenceField::Timezone => BitmapKey::Present(PRESENT_TIMEZONE),
        PresenceField::KlaviyoList => BitmapKey::Present(PRESENT_KLAVIYO_LIST),
        PresenceField::LifetimeSpend => BitmapKey::Exists(NumberAttr::LifetimeSpend),
        PresenceField::AbandonedCartValue => BitmapKey::Exists(NumberAttr::CartValue),
    }
}

/// The bitmap of customers with any event of a kind (of one broadcast, for clicks).
pub fn event_any_key(kind: EventKind, broadcast: Option<&str>) -> BitmapKey {
    match broadcast {
        Some(broadcast) => BitmapKey::ClickedBroadcast(broadcast.to_owned()),
        None => BitmapKey::EventAny(kind),
    }
}

/// The bitmap of customers with an event of a kind (of one broadcast) on a local day.
pub fn event_day_key(kind: EventKind, broadcast: Option<&str>, day: DayNumber) -> BitmapKey {
    match broadcast {
        Some(broadcast) => BitmapKey::ClickedBroadcastDay(broadcast.to_owned(), day),
        None => BitmapKey::EventDay(kind, day),
    }
}
