//! What a segment's members depend on: the inputs a write touches, and the
//! index from each input to the segments whose rules read it.

use std::collections::{BTreeSet, HashMap, HashSet};

use roaring::RoaringBitmap;

use crate::index::TenantIndex;
use crate::index::eval::{number_attr, presence_key, set_key};
use crate::rule::{Comparison, EventKind, NumberField, NumberTest, Predicate, Rule, Window};
use crate::store::keys::{BitmapKey, NumberAttr};

/// What a segment's members can depend on. A write touches inputs; a
/// segment reads them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// Which customers are live: read by negations (`NOT`, `!=`, `IS NOT
    /// SET`), `customer IN`, include and exclude lists, and the amounts
    /// that default to 0.
    Live,
    /// One value bitmap: opted in, a tag, a state, a time zone, a list, or
    /// the presence of a set-like field.
    Value(BitmapKey),
    /// Any event of one kind, on any day.
    Event(EventKind),
    /// One bit-sliced number.
    Number(NumberAttr),
    /// The answers to one question.
    Answer {
        experience: String,
        question: String,
    },
}

impl Input {
    /// The input a stored bitmap belongs to.
    pub fn of_key(key: &BitmapKey) -> Input {
        match key {
            BitmapKey::Live => Input::Live,
            BitmapKey::EventAny(kind) | BitmapKey::EventDay(kind, _) => Input::Event(*kind),
            BitmapKey::ClickedBroadcast(_) | BitmapKey::ClickedBroadcastDay(..) => {
                Input::Event(EventKind::Clicked)
            }
            BitmapKey::Slice(attr, _) | BitmapKey::Exists(attr) => Input::Number(*attr),
            BitmapKey::Answered {
                experience,
                question,
            }
            | BitmapKey::Answer {
                experience,
                question,
                ..
            } => Input::Answer {
                experience: experience.clone(),
                question: question.clone(),
            },
            BitmapKey::OptedIn
            | BitmapKey::Tag(_)
            | BitmapKey::State(_)
            | BitmapKey::Timezone(_)
            | BitmapKey::KlaviyoList(_)
            | BitmapKey::Present(_) => Input::Value(key.clone()),
        }
    }
}

/// What one change to a tenant touched.
#[derive(Debug, Default)]
pub struct Touched {
    /// The inputs whose bitmaps or events it changed.
    pub inputs: HashSet<Input>,
    /// Every segment may have changed (a new time zone).
    pub everything: bool,
    /// The customers whose data changed, when known: no one else's
    /// membership can have moved (membership depends on a customer's own
    /// data alone), so only they are evaluated again.
    pub customers: Option<RoaringBitmap>,
    /// Merchant ids of customers deleted by the change, by dense id: they
    /// are no longer in the index, and their leaving is still told.
    pub departed: HashMap<u32, String>,
}

/// Whom a refresh evaluates again.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// A write's customers, and the ids of those it deleted; `None`: everyone.
    pub(crate) touched: Option<&'a Touched>,
}

impl Scope<'_> {
    pub(crate) const EVERYONE: Scope<'static> = Scope { touched: None };
}

/// Which segments read what: the index from qualifier values to the
/// segments whose rules read them, through `segment = ...` references.
#[derive(Debug, Default)]
pub(crate) struct Dependencies {
    readers: HashMap<Input, BTreeSet<String>>,
    /// Segments with a relative window in their rule or in a segment it
    /// refers to.
    pub(crate) timed: BTreeSet<String>,
    /// Each segment and the segments its rule reads, itself included.
    reads: HashMap<String, HashSet<String>>,
}

impl Dependencies {
    /// The index of every saved segment of `index`.
    pub(crate) fn build(index: &TenantIndex) -> Dependencies {
        let mut deps = Dependencies::default();
        for segment_id in index.segments.keys() {
            let mut reach = Reach::default();
            reach.segment(index, segment_id);
            for input in reach.inputs {
                deps.readers
                    .entry(input)
                    .or_default()
                    .insert(segment_id.clone());
            }
            if reach.timed {
                deps.timed.insert(segment_id.clone());
            }
            deps.reads.insert(segment_id.clone(), reach.segments);
        }
        deps
    }

    /// The segments a change may have moved.
    pub(crate) fn affected(&self, touched: &Touched) -> BTreeSet<String> {
        if touched.everything {
            return self.reads.keys().cloned().collect();
        }
        touched
            .inputs
            .iter()
            .filter_map(|input| self.readers.get(input))
            .flatten()
            .cloned()
            .collect()
    }

    /// `segment_id` and every segment that reads it.
    pub(crate) fn readers_of(&self, segment_id: &str) -> BTreeSet<String> {
        self.reads
            .iter()
            .filter(|(_, reads)| reads.contains(segment_id))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// What a segment's rule reads, through the segments it refers to.
#[derive(Default)]
struct Reach {
    inputs: HashSet<Input>,
    timed: bool,
    segments: HashSet<String>,
}

impl Reach {
    fn segment(&mut self, index: &TenantIndex, segment_id: &str) {
        if !self.segments.insert(segment_id.to_owned()) {
            return;
        }
        let Some(segment) = index.segments.get(segment_id) else {
            return;
        };
        let record = &segment.record;
        if !record.included_customer_ids.is_empty() || !record.excluded_customer_ids.is_empty() {
            self.inputs.insert(Input::Live);
        }
        if let Some(rule) = &segment.rule {
            self.rule(index, rule);
        }
    }

    fn rule(&mut self, index: &TenantIndex, rule: &Rule) {
        match rule {
            Rule::And(children) | Rule::Or(children) => {
                children.iter().for_each(|child| self.rule(index, child))
            }
            Rule::Not(child) => {
                self.inputs.insert(Input::Live);
                self.rule(index, child);
            }
            Rule::Predicate(predicate) => self.predicate(index, predicate),
        }
    }

    fn predicate(&mut self, index: &TenantIndex, predicate: &Predicate) {
        match predicate {
            Predicate::OptedIn => {
                self.inputs.insert(Input::Value(BitmapKey::OptedIn));
            }
            Predicate::Event { kind, window, .. } => {
                self.inputs.insert(Input::Event(*kind));
                self.window(window.as_ref());
            }
            Predicate::Answered {
                experience,
                question,
                ..
            } => {
                self.inputs.insert(Input::Answer {
                    experience: experience.clone(),
                    question: question.clone(),
                });
            }
            Predicate::Set { field, values } => {
                for value in values {
                    self.inputs.insert(Input::of_key(&set_key(*field, value)));
                }
            }
            Predicate::Number { field, test } => {
                self.inputs.insert(Input::Number(number_attr(*field)));
                // Every live customer has these, 0 without orders; and `!=`
                // keeps the customers with no value.
                if matches!(field, NumberField::Spent | NumberField::OrderCount)
                    || matches!(test, NumberTest::Compare(Comparison::Ne, _))
                {
                    self.inputs.insert(Input::Live);
                }
            }
            Predicate::Created(window) => {
                self.inputs.insert(Input::Number(NumberAttr::Created));
                self.window(Some(window));
            }
            Predicate::Customers(_) => {
                self.inputs.insert(Input::Live);
            }
            Predicate::Segment(segment_id) => self.segment(index, segment_id),
            Predicate::Presence { field, is_set } => {
                self.inputs.insert(Input::of_key(&presence_key(*field)));
                if !is_set {
                    self.inputs.insert(Input::Live);
                }
            }
        }
    }

    fn window(&mut self, window: Option<&Window>) {
        if matches!(window, Some(Window::Within(_) | Window::Since(_))) {
            self.timed = true;
        }
    }
}
