//! Why a customer is in or out of a segment: every node of the rule with
//! its truth value for the customer, and for each leaf the fact it rests on.
//!
//! Truth values come from the same evaluation as counts, so an explanation
//! never disagrees with `CountAudience`; the facts are read from the
//! customer's record and the day bitmaps, to the local day.

use chrono::TimeZone;
use chrono_tz::Tz;

use super::audience::live_customer;
use super::types::{Clause, Decision, Membership};
use super::{Engine, read};
use crate::error::{Error, Result};
use crate::index::TenantIndex;
use crate::index::eval::{Evaluation, event_any_key, event_day_key};
use crate::rule::values::format_cents;
use crate::rule::{EventKind, NumberField, Predicate, PresenceField, Rule, SetField, Window};
use crate::store::keys::event_kind_code;
use crate::store::records::CustomerRecord;
use crate::time::{self, Seconds, TimeRange};

/// Most segments explained in one call.
pub const MAX_EXPLAINED_SEGMENTS: usize = 100;

impl Engine {
    /// Explains one customer's membership of saved segments, then of an
    /// inline rule if one is given.
    pub fn explain(
        &self,
        tenant: &str,
        customer_id: &str,
        segment_ids: &[String],
        rule: Option<&Rule>,
        instant: Seconds,
    ) -> Result<Vec<Membership>> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let dense = live_customer(&index, customer_id)?;
        let record = self
            .store
            .customer(&index.tenant, dense)?
            .ok_or_else(|| Error::Internal(format!("live customer {dense} has no record")))?;
        let evaluation = Evaluation::new(&index, &self.store, instant);
        let explainer = Explainer {
            evaluation: &evaluation,
            record: &record,
            dense,
        };

        let mut memberships = Vec::with_capacity(segment_ids.len() + 1);
        for segment_id in segment_ids {
            let segment = index
                .segments
                .get(segment_id)
                .ok_or_else(|| Error::NotFound(format!("segment `{segment_id}` not found")))?;
            let (rule_holds, clauses) = match &segment.rule {
                Some(rule) => explainer.rule(rule)?,
                None => (false, Vec::new()),
            };
            let listed = |ids: &[String]| ids.iter().any(|id| id == customer_id);
            let decided_by = if listed(&segment.record.excluded_customer_ids) {
                Decision::Excluded
            } else if listed(&segment.record.included_customer_ids) && !rule_holds {
                Decision::Included
            } else {
                Decision::Rule
            };
            memberships.push(Membership {
                segment_id: segment_id.clone(),
                member: match decided_by {
                    Decision::Excluded => false,
                    Decision::Included => true,
                    Decision::Rule => rule_holds,
                },
                decided_by,
                rule_holds,
                clauses,
            });
        }
        if let Some(rule) = rule {
            let (rule_holds, clauses) = explainer.rule(rule)?;
            memberships.push(Membership {
                segment_id: String::new(),
                member: rule_holds,
                decided_by: Decision::Rule,
                rule_holds,
                clauses,
            });
        }
        Ok(memberships)
    }
}

struct Explainer<'a> {
    evaluation: &'a Evaluation<'a>,
    record: &'a CustomerRecord,
    dense: u32,
}

impl Explainer<'_> {
    /// Whether the rule holds, and every node with its value.
    fn rule(&self, rule: &Rule) -> Result<(bool, Vec<Clause>)> {
        let mut clauses = Vec::new();
        self.evaluation
            .each_node(rule, &mut |path, node, members| {
                let holds = members.contains(self.dense);
                let fact = match node {
                    Rule::Predicate(predicate) => self.fact(predicate, holds),
                    _ => String::new(),
                };
                clauses.push(Clause {
                    path: path.to_vec(),
                    rule_text: node.to_string(),
                    holds,
                    fact,
                });
            })?;
        let holds = clauses.first().is_some_and(|root| root.holds);
        Ok((holds, clauses))
    }

    fn index(&self) -> &TenantIndex {
        self.evaluation.index
    }

    fn tz(&self) -> Tz {
        self.index().time_zone
    }

    /// The fact behind a leaf's value, in words.
    fn fact(&self, predicate: &Predicate, holds: bool) -> String {
        let record = self.record;
        match predicate {
            Predicate::OptedIn => {
                let since = record
                    .consent_time
                    .map(|t| format!(" since {}", self.date(t)))
                    .unwrap_or_default();
                if record.opted_in {
                    format!("opted in{since}")
                } else {
                    format!("not opted in{since}")
                }
            }
            Predicate::Event {
                kind,
                broadcast,
                window,
            } => self.event_fact(*kind, broadcast.as_deref(), window.as_ref(), holds),
            Predicate::Answered {
                experience,
                question,
                ..
            } => match record
                .answers
                .iter()
                .find(|answer| &answer.experience == experience && &answer.question == question)
            {
                Some(answer) => format!(
                    "latest answer to `{question}` of `{experience}`: `{}`, on {}",
                    answer.answer,
                    self.date(answer.time)
                ),
                None => format!("never answered `{question}` of `{experience}`"),
            },
            Predicate::Set { field, .. } => self.set_fact(*field),
            Predicate::Presence { field, .. } => match field {
                PresenceField::Tag => self.set_fact(SetField::Tag),
                PresenceField::State => self.set_fact(SetField::State),
                PresenceField::Timezone => self.set_fact(SetField::Timezone),
                PresenceField::KlaviyoList => self.set_fact(SetField::KlaviyoList),
                PresenceField::LifetimeSpend => self.number_fact(NumberField::LifetimeSpend),
                PresenceField::AbandonedCartValue => {
                    self.number_fact(NumberField::AbandonedCartValue)
                }
            },
            Predicate::Number { field, .. } => self.number_fact(*field),
            Predicate::Created(window) => format!(
                "created on {}; {}",
                self.date(record.creation_time()),
                self.window_words(window)
            ),
            Predicate::Customers(_) => {
                if holds {
                    "listed by id".to_owned()
                } else {
                    "not listed".to_owned()
                }
            }
            Predicate::Segment(segment_id) => {
                if holds {
                    format!("a member of segment `{segment_id}`")
                } else {
                    format!("not a member of segment `{segment_id}`")
                }
            }
        }
    }

    fn set_fact(&self, field: SetField) -> String {
        let record = self.record;
        let (name, values): (&str, Vec<&str>) = match field {
            SetField::Tag => ("tags", record.tags.iter().map(String::as_str).collect()),
            SetField::State => ("state", record.state.as_deref().into_iter().collect()),
            SetField::Timezone => (
                "time zone",
                record.time_zone.as_deref().into_iter().collect(),
            ),
            SetField::KlaviyoList => (
                "Klaviyo lists",
                record.klaviyo_lists.iter().map(String::as_str).collect(),
            ),
        };
        if values.is_empty() {
            format!("no {name}")
        } else {
            format!("{name}: {}", values.join(", "))
        }
    }

    fn number_fact(&self, field: NumberField) -> String {
        let record = self.record;
        match field {
            NumberField::Spent => format!(
                "spent {} over {} orders",
                format_cents(record.spent_cents),
                record.order_count
            ),
            NumberField::OrderCount => format!("{} orders", record.order_count),
            NumberField::LifetimeSpend => match record.lifetime_spend_cents {
                Some(cents) => format!("lifetime spend {}", format_cents(cents)),
                None => "no lifetime spend".to_owned(),
            },
            NumberField::AbandonedCartValue => match record.latest_cart {
                Some((t, cents)) => format!(
                    "latest abandoned cart {} on {}",
                    format_cents(cents),
                    self.date(t)
                ),
                None => "no abandoned cart".to_owned(),
            },
        }
    }

    /// The customer's latest event of a kind, inside the window when the
    /// leaf holds and overall when not, to the local day.
    fn event_fact(
        &self,
        kind: EventKind,
        broadcast: Option<&str>,
        window: Option<&Window>,
        holds: bool,
    ) -> String {
        let noun = match (kind, broadcast) {
            (EventKind::Ordered, _) => "order".to_owned(),
            (EventKind::Messaged, _) => "message".to_owned(),
            (EventKind::Clicked, None) => "click".to_owned(),
            (EventKind::Clicked, Some(broadcast)) => format!("click on broadcast `{broadcast}`"),
            (EventKind::AbandonedCart, _) => "abandoned cart".to_owned(),
        };
        let index = self.index();
        if !index
            .bitmap(&event_any_key(kind, broadcast))
            .contains(self.dense)
        {
            return format!("no {noun} ever");
        }
        let Some(&(first, last)) = index.meta.event_bounds.get(&event_kind_code(kind)) else {
            return format!("no {noun} ever");
        };
        let range = match (window, holds) {
            (Some(window), true) => {
                let range = time::window_range(window, self.tz(), self.evaluation.instant);
                TimeRange {
                    from: range.from.max(first),
                    to: range.to.min(last),
                }
            }
            _ => TimeRange {
                from: first,
                to: last,
            },
        };
        let latest = self.latest_day(kind, broadcast, range);
        let when = latest.unwrap_or_else(|| "an unknown day".to_owned());
        match (window, holds) {
            (None, _) => format!("last {noun} on {when}"),
            (Some(window), true) => {
                format!(
                    "{noun} on {when}, inside the window; {}",
                    self.window_words(window)
                )
            }
            (Some(window), false) => format!(
                "last {noun} on {when}, outside the window; {}",
                self.window_words(window)
            ),
        }
    }

    /// The latest local day in `range` with an event of the customer's.
    fn latest_day(
        &self,
        kind: EventKind,
        broadcast: Option<&str>,
        range: TimeRange,
    ) -> Option<String> {
        if range.is_empty() {
            return None;
        }
        let tz = self.tz();
        let index = self.index();
        let (first, last) = (time::day_of(tz, range.from), time::day_of(tz, range.to));
        (first..=last)
            .rev()
            .find(|&day| {
                index
                    .bitmaps
                    .get(&event_day_key(kind, broadcast, day))
                    .is_some_and(|bitmap| bitmap.contains(self.dense))
            })
            .and_then(time::date_of)
            .map(|date| date.to_string())
    }

    /// The instants a window covers now, in the tenant's zone.
    fn window_words(&self, window: &Window) -> String {
        let range = time::window_range(window, self.tz(), self.evaluation.instant);
        let zone = self.tz().name();
        match window {
            Window::Before(_) => format!(
                "the window ends before {} ({zone})",
                self.moment(range.to + 1)
            ),
            _ => format!(
                "the window runs from {} to {} ({zone})",
                self.moment(range.from),
                self.moment(range.to)
            ),
        }
    }

    /// A local date.
    fn date(&self, t: Seconds) -> String {
        time::date_of(time::day_of(self.tz(), t)).map_or_else(|| t.to_string(), |d| d.to_string())
    }

    /// A local date and time to the second.
    fn moment(&self, t: Seconds) -> String {
        match self.tz().timestamp_opt(t, 0).single() {
            Some(local) => local.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => t.to_string(),
        }
    }
}
