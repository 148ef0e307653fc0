//! The structured rule of the protobuf API, to and from the engine's `Rule`.
//!
//! A structured rule is normalised exactly like a parsed one, so both forms
//! of the same rule reach the engine as the same tree.

use std::collections::HashSet;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::proto;
use crate::proto::predicate::Qualifier;
use crate::proto::rule::Node;
use crate::proto::window::Window as WindowKind;
use crate::rule::values::{normalize_state, normalize_tag, normalize_time_zone};
use crate::rule::{
    self, Comparison, Duration, DurationUnit, EventKind, NumberField, NumberTest, Predicate,
    PresenceField, Rule, SetField, Window,
};

/// Converts and normalises a structured rule; `field` names it in errors.
pub fn from_proto(rule: proto::Rule, field: &str) -> Result<Rule> {
    let tree = convert(rule, field, 0)?;
    rule::normalize(tree).map_err(|error| Error::RuleInvalid {
        field: field.to_owned(),
        error,
    })
}

fn convert(rule: proto::Rule, field: &str, depth: usize) -> Result<Rule> {
    if depth > rule::MAX_RULE_DEPTH {
        return Err(Error::invalid(
            field,
            format!("rule is nested deeper than {} levels", rule::MAX_RULE_DEPTH),
        ));
    }
    let node = rule
        .node
        .ok_or_else(|| Error::invalid(field, "rule node is empty"))?;
    Ok(match node {
        Node::And(list) => Rule::And(children(list, &format!("{field}.and"), depth)?),
        Node::Or(list) => Rule::Or(children(list, &format!("{field}.or"), depth)?),
        Node::Not(child) => Rule::Not(Box::new(convert(
            *child,
            &format!("{field}.not"),
            depth + 1,
        )?)),
        Node::Predicate(predicate) => {
            Rule::Predicate(self::predicate(predicate, &format!("{field}.predicate"))?)
        }
    })
}

fn children(list: proto::RuleList, field: &str, depth: usize) -> Result<Vec<Rule>> {
    if list.rules.is_empty() {
        return Err(Error::invalid(
            field,
            "an empty group is not allowed: give at least one rule",
        ));
    }
    list.rules
        .into_iter()
        .enumerate()
        .map(|(i, child)| convert(child, &format!("{field}.rules[{i}]"), depth + 1))
        .collect()
}

fn predicate(predicate: proto::Predicate, field: &str) -> Result<Predicate> {
    let qualifier = predicate
        .qualifier
        .ok_or_else(|| Error::invalid(field, "predicate has no qualifier"))?;
    Ok(match qualifier {
        Qualifier::OptedIn(_) => Predicate::OptedIn,
        Qualifier::Event(event) => {
            let field = format!("{field}.event");
            let kind = match proto::EventKind::try_from(event.kind) {
                Ok(proto::EventKind::Ordered) => EventKind::Ordered,
                Ok(proto::EventKind::Messaged) => EventKind::Messaged,
                Ok(proto::EventKind::Clicked) => EventKind::Clicked,
                Ok(proto::EventKind::AbandonedCart) => EventKind::AbandonedCart,
                _ => {
                    return Err(Error::invalid(
                        format!("{field}.kind"),
                        "choose an event kind",
                    ));
                }
            };
            if event.broadcast_id.is_some() && kind != EventKind::Clicked {
                return Err(Error::invalid(
                    format!("{field}.broadcast_id"),
                    "a broadcast goes with EVENT_KIND_CLICKED only",
                ));
            }
            let window = event
                .window
                .map(|window| self::window(window, &format!("{field}.window")))
                .transpose()?;
            Predicate::Event {
                kind,
                broadcast: event.broadcast_id,
                window,
            }
        }
        Qualifier::Set(set) => {
            let field = format!("{field}.set");
            let set_field = match proto::SetField::try_from(set.field) {
                Ok(proto::SetField::Tag) => SetField::Tag,
                Ok(proto::SetField::State) => SetField::State,
                Ok(proto::SetField::Timezone) => SetField::Timezone,
                Ok(proto::SetField::KlaviyoList) => SetField::KlaviyoList,
                _ => return Err(Error::invalid(format!("{field}.field"), "choose a field")),
            };
            if set.values.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.values"),
                    "give at least one value",
                ));
            }
            if set.values.len() > rule::MAX_IN_VALUES {
                return Err(Error::invalid(
                    format!("{field}.values"),
                    format!("more than {} values", rule::MAX_IN_VALUES),
                ));
            }
            let mut seen = HashSet::with_capacity(set.values.len());
            let mut values: Vec<String> = Vec::with_capacity(set.values.len());
            for (i, value) in set.values.iter().enumerate() {
                let normalised = set_value(set_field, value, &format!("{field}.values[{i}]"))?;
                if seen.insert(normalised.clone()) {
                    values.push(normalised);
                }
            }
            Predicate::Set {
                field: set_field,
                values,
            }
        }
        Qualifier::Number(number) => {
            let field = format!("{field}.number");
            let number_field = match proto::NumberField::try_from(number.field) {
                Ok(proto::NumberField::Spent) => NumberField::Spent,
                Ok(proto::NumberField::LifetimeSpend) => NumberField::LifetimeSpend,
                Ok(proto::NumberField::AbandonedCartValue) => NumberField::AbandonedCartValue,
                Ok(proto::NumberField::OrderCount) => NumberField::OrderCount,
                _ => return Err(Error::invalid(format!("{field}.field"), "choose a field")),
            };
            let value = super::convert::cents(number.value, &format!("{field}.value"))?;
            let comparison = match proto::Comparison::try_from(number.comparison) {
                Ok(proto::Comparison::Eq) => Comparison::Eq,
                Ok(proto::Comparison::Ne) => Comparison::Ne,
                Ok(proto::Comparison::Lt) => Comparison::Lt,
                Ok(proto::Comparison::Le) => Comparison::Le,
                Ok(proto::Comparison::Gt) => Comparison::Gt,
                Ok(proto::Comparison::Ge) => Comparison::Ge,
                Ok(proto::Comparison::Between) => {
                    let upper = super::convert::cents(number.upper, &format!("{field}.upper"))?;
                    if upper < value {
                        return Err(Error::invalid(
                            format!("{field}.upper"),
                            format!("upper bound {upper} is below the lower bound {value}"),
                        ));
                    }
                    return Ok(Predicate::Number {
                        field: number_field,
                        test: NumberTest::Between(value, upper),
                    });
                }
                _ => {
                    return Err(Error::invalid(
                        format!("{field}.comparison"),
                        "choose a comparison",
                    ));
                }
            };
            if number.upper != 0 {
                return Err(Error::invalid(
                    format!("{field}.upper"),
                    "an upper bound goes with COMPARISON_BETWEEN only",
                ));
            }
            Predicate::Number {
                field: number_field,
                test: NumberTest::Compare(comparison, value),
            }
        }
        Qualifier::Created(window) => {
            Predicate::Created(self::window(window, &format!("{field}.created"))?)
        }
        Qualifier::Customers(list) => {
            let path = format!("{field}.customers.customer_ids");
            if list.customer_ids.len() > rule::MAX_IN_VALUES {
                return Err(Error::invalid(
                    path,
                    format!("more than {} ids", rule::MAX_IN_VALUES),
                ));
            }
            let mut seen = HashSet::with_capacity(list.customer_ids.len());
            let mut ids: Vec<String> = Vec::with_capacity(list.customer_ids.len());
            for (i, id) in list.customer_ids.into_iter().enumerate() {
                let id = super::convert::id(&id, &format!("{path}[{i}]"))?;
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
            if ids.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.customers.customer_ids"),
                    "give at least one id",
                ));
            }
            Predicate::Customers(ids)
        }
        Qualifier::SegmentId(segment_id) => {
            if segment_id.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.segment_id"),
                    "give a segment id",
                ));
            }
            Predicate::Segment(segment_id)
        }
        Qualifier::Answered(answered) => Predicate::Answered {
            experience: answered.experience_id,
            question: answered.question_id,
            answer: answered.answer,
        },
        Qualifier::Presence(presence) => {
            let presence_field = match proto::PresenceField::try_from(presence.field) {
                Ok(proto::PresenceField::Tag) => PresenceField::Tag,
                Ok(proto::PresenceField::State) => PresenceField::State,
                Ok(proto::PresenceField::Timezone) => PresenceField::Timezone,
                Ok(proto::PresenceField::KlaviyoList) => PresenceField::KlaviyoList,
                Ok(proto::PresenceField::LifetimeSpend) => PresenceField::LifetimeSpend,
                Ok(proto::PresenceField::AbandonedCartValue) => PresenceField::AbandonedCartValue,
                _ => {
                    return Err(Error::invalid(
                        format!("{field}.presence.field"),
                        "choose a field",
                    ));
                }
            };
            Predicate::Presence {
                field: presence_field,
                is_set: presence.is_set,
            }
        }
    })
}

/// Normalises one value of a set-like field.
pub fn set_value(field: SetField, value: &str, path: &str) -> Result<String> {
    match field {
        SetField::Tag => {
            normalize_tag(value).ok_or_else(|| Error::invalid(path, "a tag cannot be empty"))
        }
        SetField::State => normalize_state(value)
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid(path, format!("unknown state `{value}`"))),
        SetField::Timezone => normalize_time_zone(value)
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid(path, format!("unknown time zone `{value}`"))),
        SetField::KlaviyoList => super::convert::id(value, path),
    }
}

fn window(window: proto::Window, field: &str) -> Result<Window> {
    let kind = window.window.ok_or_else(|| {
        Error::invalid(
            field,
            "window is empty: give within, between, since or before",
        )
    })?;
    Ok(match kind {
        WindowKind::Within(duration) => {
            let unit = match proto::window::Unit::try_from(duration.unit) {
                Ok(proto::window::Unit::Hours) => DurationUnit::Hours,
                Ok(proto::window::Unit::Days) => DurationUnit::Days,
                Ok(proto::window::Unit::Weeks) => DurationUnit::Weeks,
                _ => {
                    return Err(Error::invalid(
                        format!("{field}.within.unit"),
                        "choose a unit",
                    ));
                }
            };
            if duration.amount == 0 {
                return Err(Error::invalid(
                    format!("{field}.within.amount"),
                    "a duration must be more than zero".to_owned(),
                ));
            }
            Window::Within(Duration {
                amount: duration.amount,
                unit,
            })
        }
        WindowKind::Between(range) => {
            let first = date(&range.start_date, &format!("{field}.between.start_date"))?;
            let last = date(&range.end_date, &format!("{field}.between.end_date"))?;
            if first > last {
                return Err(Error::invalid(
                    format!("{field}.between"),
                    format!("start date {first} is after end date {last}"),
                ));
            }
            Window::Between(first, last)
        }
        WindowKind::Since(day) => Window::Since(date(&day, &format!("{field}.since"))?),
        WindowKind::Before(day) => Window::Before(date(&day, &format!("{field}.before"))?),
    })
}

fn date(text: &str, field: &str) -> Result<NaiveDate> {
    let well_formed = text.len() == 10
        && text.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !well_formed {
        return Err(Error::invalid(
            field,
            format!("expected a date as YYYY-MM-DD, found `{text}`"),
        ));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::invalid(field, format!("date `{text}` does not exist")))
}

/// Renders an engine rule as a structured rule.
pub fn to_proto(rule: &Rule) -> proto::Rule {
    let node = match rule {
        Rule::And(children) => Node::And(proto::RuleList {
            rules: children.iter().map(to_proto).collect(),
        }),
        Rule::Or(children) => Node::Or(proto::RuleList {
            rules: children.iter().map(to_proto).collect(),
        }),
        Rule::Not(child) => Node::Not(Box::new(to_proto(child))),
        Rule::Predicate(predicate) => Node::Predicate(predicate_to_proto(predicate)),
    };
    proto::Rule { node: Some(node) }
}

fn predicate_to_proto(predicate: &Predicate) -> proto::Predicate {
    let qualifier = match predicate {
        Predicate::OptedIn => Qualifier::OptedIn(proto::OptedIn {}),
        Predicate::Event {
            kind,
            broadcast,
            window,
        } => Qualifier::Event(proto::EventCondition {
            kind: match kind {
                EventKind::Ordered => proto::EventKind::Ordered,
                EventKind::Messaged => proto::EventKind::Messaged,
                EventKind::Clicked => proto::EventKind::Clicked,
                EventKind::AbandonedCart => proto::EventKind::AbandonedCart,
            } as i32,
            broadcast_id: broadcast.clone(),
            window: window.as_ref().map(window_to_proto),
        }),
        Predicate::Answered {
            experience,
            question,
            answer,
        } => Qualifier::Answered(proto::AnsweredCondition {
            experience_id: experience.clone(),
            question_id: question.clone(),
            answer: answer.clone(),
        }),
        Predicate::Set { field, values } => Qualifier::Set(proto::SetCondition {
            field: match field {
                SetField::Tag => proto::SetField::Tag,
                SetField::State => proto::SetField::State,
                SetField::Timezone => proto::SetField::Timezone,
                SetField::KlaviyoList => proto::SetField::KlaviyoList,
            } as i32,
            values: values.clone(),
        }),
        Predicate::Number { field, test } => {
            let (comparison, value, upper) = match *test {
                NumberTest::Compare(comparison, value) => {
                    let comparison = match comparison {
                        Comparison::Eq => proto::Comparison::Eq,
                        Comparison::Ne => proto::Comparison::Ne,
                        Comparison::Lt => proto::Comparison::Lt,
                        Comparison::Le => proto::Comparison::Le,
                        Comparison::Gt => proto::Comparison::Gt,
                        Comparison::Ge => proto::Comparison::Ge,
                    };
                    (comparison, value, 0)
                }
                NumberTest::Between(low, high) => (proto::Comparison::Between, low, high),
            };
            Qualifier::Number(proto::NumberCondition {
                field: match field {
                    NumberField::Spent => proto::NumberField::Spent,
                    NumberField::LifetimeSpend => proto::NumberField::LifetimeSpend,
                    NumberField::AbandonedCartValue => proto::NumberField::AbandonedCartValue,
                    NumberField::OrderCount => proto::NumberField::OrderCount,
                } as i32,
                comparison: comparison as i32,
                value: value as i64,
                upper: upper as i64,
            })
        }
        Predicate::Created(window) => Qualifier::Created(window_to_proto(window)),
        Predicate::Customers(ids) => Qualifier::Customers(proto::CustomerList {
            customer_ids: ids.clone(),
        }),
        Predicate::Segment(segment_id) => Qualifier::SegmentId(segment_id.clone()),
        Predicate::Presence { field, is_set } => Qualifier::Presence(proto::PresenceCondition {
            field: match field {
                PresenceField::Tag => proto::PresenceField::Tag,
                PresenceField::State => proto::PresenceField::State,
                PresenceField::Timezone => proto::PresenceField::Timezone,
                PresenceField::KlaviyoList => proto::PresenceField::KlaviyoList,
                PresenceField::LifetimeSpend => proto::PresenceField::LifetimeSpend,
                PresenceField::AbandonedCartValue => proto::PresenceField::AbandonedCartValue,
            } as i32,
            is_set: *is_set,
        }),
    };
    proto::Predicate {
        qualifier: Some(qualifier),
    }
}

fn window_to_proto(window: &Window) -> proto::Window {
    let kind = match window {
        Window::Within(duration) => WindowKind::Within(proto::window::Duration {
            amount: duration.amount,
            unit: match duration.unit {
                DurationUnit::Hours => proto::window::Unit::Hours,
                DurationUnit::Days => proto::window::Unit::Days,
                DurationUnit::Weeks => proto::window::Unit::Weeks,
            } as i32,
        }),
        Window::Between(first, last) => WindowKind::Between(proto::window::DateRange {
            start_date: first.to_string(),
            end_date: last.to_string(),
        }),
        Window::Since(day) => WindowKind::Since(day.to_string()),
        Window::Before(day) => WindowKind::Before(day.to_string()),
    };
    proto::Window { window: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `rule_text` fuzz target: ids the text form took and
    /// the structured form (and every write) refused. Both forms now
    /// refuse them, and take the longest id a write takes.
    #[test]
    fn both_forms_hold_ids_to_what_a_write_takes() {
        let rules: [fn(&str) -> String; 6] = [
            |id| format!("customer IN (\"{id}\")"),
            |id| format!("klaviyo_list = \"{id}\""),
            |id| format!("segment = \"{id}\""),
            |id| format!("clicked broadcast \"{id}\" WITHIN 7d"),
            |id| format!("answered(\"{id}\", \"size\")"),
            |id| format!("answered(\"quiz\", \"{id}\")"),
        ];
        let longest = "a".repeat(crate::rule::MAX_ID_BYTES);
        let too_long = "a".repeat(crate::rule::MAX_ID_BYTES + 1);
        for rule_of in rules {
            for bad in [too_long.as_str(), "\u{0}", "x\u{6}y"] {
                let text = rule_of(bad);
                assert!(crate::rule::parse(&text).is_err(), "{text:?} parsed");
            }
            let text = rule_of(&longest);
            let rule = crate::rule::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let back =
                from_proto(to_proto(&rule), "rule").unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, rule, "{text}");
        }
    }
}
