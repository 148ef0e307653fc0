//! Normalisation of rule trees built from the structured (protobuf) form.
//!
//! The parser already yields normalised trees; a tree built field by field
//! may not be. `normalize` flattens `AND` in `AND` and `OR` in `OR`, replaces
//! a one-child group by its child, refuses empty groups, normalises every
//! value with the parser's own functions and enforces the limits. It walks
//! the tree with an explicit stack, and refuses a tree as soon as a
//! normalised part of it is too deep, so no input exhausts the stack.

use super::ast::{EventKind, NumberField, NumberTest, Predicate, Rule};
use super::canonical::set_field_name;
use super::error::RuleError;
use super::limits::{MAX_IN_VALUES, MAX_ORDER_COUNT, MAX_RULE_DEPTH, check_limits};
use super::values::{
    check_amount, check_window, dedup_values, format_cents, id_value, set_value, text_value,
};

/// Brings a tree from the structured form to the normalised shape that
/// [`super::parse()`] produces, or says what is wrong with it.
pub fn normalize(rule: Rule) -> Result<Rule, RuleError> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut current = rule;

    'descend: loop {
        // Go down the leftmost branch until a qualifier.
        let mut done = loop {
            match current {
                Rule::Predicate(predicate) => {
                    let rule = Rule::Predicate(normalize_predicate(predicate)?);
                    break Normalised { rule, height: 1 };
                }
                Rule::Not(child) => {
                    frames.push(Frame::Not);
                    current = *child;
                }
                Rule::And(children) => {
                    let mut pending = children.into_iter();
                    let first = pending
                        .next()
                        .ok_or(RuleError::EmptyGroup { operator: "AND" })?;
                    frames.push(Frame::Group(Group::new(false, pending)));
                    current = first;
                }
                Rule::Or(children) => {
                    let mut pending = children.into_iter();
                    let first = pending
                        .next()
                        .ok_or(RuleError::EmptyGroup { operator: "OR" })?;
                    frames.push(Frame::Group(Group::new(true, pending)));
                    current = first;
                }
            }
        };

        // Go back up, building each finished node, until a group has children left.
        loop {
            match frames.pop() {
                None => {
                    check_limits(&done.rule)?;
                    return Ok(done.rule);
                }
                Some(Frame::Not) => {
                    done = Normalised::new(Rule::Not(Box::new(done.rule)), done.height + 1)?;
                }
                Some(Frame::Group(mut group)) => {
                    group.add(done);
                    if let Some(next) = group.pending.next() {
                        frames.push(Frame::Group(group));
                        current = next;
                        continue 'descend;
                    }
                    done = group.close()?;
                }
            }
        }
    }
}

/// A normalised subtree and its depth.
struct Normalised {
    rule: Rule,
    height: usize,
}

impl Normalised {
    fn new(rule: Rule, height: usize) -> Result<Self, RuleError> {
        if height > MAX_RULE_DEPTH {
            return Err(RuleError::TooDeep);
        }
        Ok(Normalised { rule, height })
    }
}

/// An operator whose children are being normalised.
enum Frame {
    Not,
    Group(Group),
}

/// An `AND` or `OR` part-way through its children.
struct Group {
    is_or: bool,
    pending: std::vec::IntoIter<Rule>,
    children: Vec<Rule>,
    child_height: usize,
}

impl Group {
    fn new(is_or: bool, pending: std::vec::IntoIter<Rule>) -> Self {
        Group {
            is_or,
            children: Vec::with_capacity(pending.len() + 1),
            pending,
            child_height: 0,
        }
    }

    /// Adds a normalised child, taking over its children if it has the same operator.
    fn add(&mut self, child: Normalised) {
        match child.rule {
            Rule::Or(grandchildren) if self.is_or => {
                self.child_height = self.child_height.max(child.height.saturating_sub(1));
                self.children.extend(grandchildren);
            }
            Rule::And(grandchildren) if !self.is_or => {
                self.child_height = self.child_height.max(child.height.saturating_sub(1));
                self.children.extend(grandchildren);
            }
            rule => {
                self.child_height = self.child_height.max(child.height);
                self.children.push(rule);
            }
        }
    }

    /// The finished group, or its only child.
    fn close(mut self) -> Result<Normalised, RuleError> {
        if self.children.len() == 1
            && let Some(only) = self.children.pop()
        {
            return Ok(Normalised {
                rule: only,
                height: self.child_height,
            });
        }
        let rule = if self.is_or {
            Rule::Or(self.children)
        } else {
            Rule::And(self.children)
        };
        Normalised::new(rule, self.child_height + 1)
    }
}

/// Checks and normalises the values of one qualifier.
fn normalize_predicate(predicate: Predicate) -> Result<Predicate, RuleError> {
    let predicate = match predicate {
        Predicate::OptedIn | Predicate::Presence { .. } => predicate,
        Predicate::Event {
            kind,
            broadcast,
            window,
        } => {
            if broadcast.is_some() && kind != EventKind::Clicked {
                return Err(RuleError::BroadcastNotClicked);
            }
            Predicate::Event {
                kind,
                broadcast: broadcast
                    .map(|id| id_value("broadcast id", id))
                    .transpose()?,
                window: window.map(check_window).transpose()?,
            }
        }
        Predicate::Answered {
            experience,
            question,
            answer,
        } => Predicate::Answered {
            experience: id_value("experience id", experience)?,
            question: id_value("question id", question)?,
            answer: answer.map(|text| text_value("answer", text)).transpose()?,
        },
        Predicate::Set { field, values } => {
            let qualifier = set_field_name(field);
            if values.is_empty() {
                return Err(RuleError::NoValues { qualifier });
            }
            let values = values
                .iter()
                .map(|value| set_value(field, value))
                .collect::<Result<Vec<_>, _>>()?;
            let values = dedup_values(values);
            if values.len() > MAX_IN_VALUES {
                return Err(RuleError::TooManyValues { qualifier });
            }
            Predicate::Set { field, values }
        }
        Predicate::Number { field, test } => {
            let check = |value: u64| match field {
                NumberField::OrderCount if value > MAX_ORDER_COUNT => {
                    Err(RuleError::CountTooLarge(value))
                }
                NumberField::OrderCount => Ok(value),
                _ => check_amount(value),
            };
            let test = match test {
                NumberTest::Compare(comparison, value) => {
                    NumberTest::Compare(comparison, check(value)?)
                }
                NumberTest::Between(low, high) => {
                    let (low, high) = (check(low)?, check(high)?);
                    if low > high {
                        let written = |value: u64| match field {
                            NumberField::OrderCount => value.to_string(),
                            _ => format_cents(value),
                        };
                        return Err(RuleError::RangeOrder {
                            low: written(low),
                            high: written(high),
                        });
                    }
                    NumberTest::Between(low, high)
                }
            };
            Predicate::Number { field, test }
        }
        Predicate::Created(window) => Predicate::Created(check_window(window)?),
        Predicate::Customers(ids) => {
            if ids.is_empty() {
                return Err(RuleError::NoValues {
                    qualifier: "customer",
                });
            }
            let ids = ids
                .into_iter()
                .map(|id| id_value("customer id", id))
                .collect::<Result<Vec<_>, _>>()?;
            let ids = dedup_values(ids);
            if ids.len() > MAX_IN_VALUES {
                return Err(RuleError::TooManyValues {
                    qualifier: "customer",
                });
            }
            Predicate::Customers(ids)
        }
        Predicate::Segment(id) => Predicate::Segment(id_value("segment id", id)?),
    };
    Ok(predicate)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::super::ast::{Comparison, Duration, DurationUnit, PresenceField, SetField, Window};
    use super::*;

    fn opted_in() -> Rule {
        Rule::Predicate(Predicate::OptedIn)
    }

    fn segment(id: &str) -> Rule {
        Rule::Predicate(Predicate::Segment(id.to_owned()))
    }

    fn not(rule: Rule) -> Rule {
        Rule::Not(Box::new(rule))
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    fn set(field: SetField, values: &[&str]) -> Rule {
        Rule::Predicate(Predicate::Set {
            field,
            values: strings(values),
        })
    }

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("a real date")
    }

    fn created(window: Window) -> Rule {
        Rule::Predicate(Predicate::Created(window))
    }

    fn number(field: NumberField, test: NumberTest) -> Rule {
        Rule::Predicate(Predicate::Number { field, test })
    }

    #[test]
    fn nested_groups_of_one_operator_are_flattened() {
        let rule = Rule::And(vec![
            segment("a"),
            Rule::And(vec![
                segment("b"),
                Rule::And(vec![segment("c"), segment("d")]),
            ]),
        ]);
        assert_eq!(
            normalize(rule),
            Ok(Rule::And(vec![
                segment("a"),
                segment("b"),
                segment("c"),
                segment("d")
            ]))
        );
        let rule = Rule::Or(vec![
            Rule::Or(vec![segment("a"), segment("b")]),
            segment("c"),
        ]);
        assert_eq!(
            normalize(rule),
            Ok(Rule::Or(vec![segment("a"), segment("b"), segment("c")]))
        );
    }

    #[test]
    fn groups_of_other_operators_stay_nested() {
        let rule = Rule::And(vec![
            Rule::Or(vec![segment("a"), segment("b")]),
            segment("c"),
        ]);
        assert_eq!(normalize(rule.clone()), Ok(rule));
    }

    #[test]
    fn one_child_groups_become_their_child() {
        assert_eq!(normalize(Rule::And(vec![opted_in()])), Ok(opted_in()));
        assert_eq!(
            normalize(not(Rule::Or(vec![Rule::And(vec![opted_in()])]))),
            Ok(not(opted_in()))
        );
        // The inner OR surfaces once its AND wrapper is gone, and merges.
        let rule = Rule::Or(vec![
            Rule::And(vec![Rule::Or(vec![segment("a"), segment("b")])]),
            segment("c"),
        ]);
        assert_eq!(
            normalize(rule),
            Ok(Rule::Or(vec![segment("a"), segment("b"), segment("c")]))
        );
    }

    #[test]
    fn double_negation_is_kept() {
        assert_eq!(normalize(not(not(opted_in()))), Ok(not(not(opted_in()))));
    }

    #[test]
    fn empty_groups_are_refused() {
        assert_eq!(
            normalize(Rule::And(vec![])),
            Err(RuleError::EmptyGroup { operator: "AND" })
        );
        let rule = Rule::And(vec![opted_in(), not(Rule::Or(vec![]))]);
        let error = normalize(rule).expect_err("refused");
        assert_eq!(error.to_string(), "empty OR group");
    }

    #[test]
    fn set_values_are_normalised_and_deduplicated() {
        assert_eq!(
            normalize(set(SetField::Tag, &[" VIP", "new", "vip "])),
            Ok(set(SetField::Tag, &["vip", "new"]))
        );
        assert_eq!(
            normalize(set(SetField::State, &["california", "NY", "CA"])),
            Ok(set(SetField::State, &["CA", "NY"]))
        );
        assert_eq!(
            normalize(set(SetField::Timezone, &["europe/paris"])),
            Ok(set(SetField::Timezone, &["Europe/Paris"]))
        );
        assert_eq!(
            normalize(Rule::Predicate(Predicate::Customers(strings(&[
                "c1", "C1", "c1"
            ])))),
            Ok(Rule::Predicate(Predicate::Customers(strings(&[
                "c1", "C1"
            ]))))
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let cases = [
            (
                set(SetField::State, &["Calfornia"]),
                "unknown state `Calfornia`",
            ),
            (
                set(SetField::Timezone, &["Mars/Base"]),
                "unknown time zone `Mars/Base`",
            ),
            (set(SetField::Tag, &["  "]), "empty tag"),
            (set(SetField::Tag, &["a\nb"]), "line break in tag"),
            (set(SetField::Tag, &[]), "`tag` needs at least one value"),
            (
                Rule::Predicate(Predicate::Customers(vec![])),
                "`customer` needs at least one value",
            ),
            (segment(""), "empty segment id"),
            (segment("a\r"), "line break in segment id"),
            (
                Rule::Predicate(Predicate::Answered {
                    experience: "e".to_owned(),
                    question: "q".to_owned(),
                    answer: Some("yes\n".to_owned()),
                }),
                "line break in answer",
            ),
            (
                Rule::Predicate(Predicate::Event {
                    kind: EventKind::Ordered,
                    broadcast: Some("b".to_owned()),
                    window: None,
                }),
                "only `clicked` takes a broadcast",
            ),
            (
                created(Window::Within(Duration {
                    amount: 0,
                    unit: DurationUnit::Days,
                })),
                "a duration must be more than zero",
            ),
            (
                created(Window::Between(date(2026, 3, 31), date(2026, 3, 1))),
                "window starts on `2026-03-31`, after it ends on `2026-03-01`",
            ),
            (
                created(Window::Since(date(10_000, 1, 1))),
                "date `+10000-01-01` is outside the years 0000 to 9999",
            ),
            (
                number(NumberField::Spent, NumberTest::Between(300, 100)),
                "`BETWEEN 3.00 AND 1.00` has its low end above its high end",
            ),
            (
                number(NumberField::OrderCount, NumberTest::Between(3, 1)),
                "`BETWEEN 3 AND 1` has its low end above its high end",
            ),
            (
                number(
                    NumberField::LifetimeSpend,
                    NumberTest::Compare(Comparison::Gt, 100_000_000_000_000),
                ),
                "amount of 100000000000000 cents is more than 999999999999.99",
            ),
            (
                number(
                    NumberField::OrderCount,
                    NumberTest::Compare(Comparison::Gt, 1_000_000_000_000),
                ),
                "order count `1000000000000` has more than 12 digits",
            ),
        ];
        for (rule, expected) in cases {
            let error = normalize(rule).expect_err(expected);
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn values_at_the_edges_are_kept() {
        let rule = Rule::And(vec![
            number(
                NumberField::Spent,
                NumberTest::Compare(Comparison::Le, 99_999_999_999_999),
            ),
            number(
                NumberField::OrderCount,
                NumberTest::Between(0, 999_999_999_999),
            ),
            created(Window::Between(date(0, 1, 1), date(9999, 12, 31))),
            Rule::Predicate(Predicate::Presence {
                field: PresenceField::State,
                is_set: false,
            }),
        ]);
        assert_eq!(normalize(rule.clone()), Ok(rule));
    }

    #[test]
    fn depth_is_measured_after_flattening() {
        // 500 ANDs each nested in the last flatten into one AND of 501 children.
        let mut rule = segment("last");
        for _ in 0..500 {
            rule = Rule::And(vec![opted_in(), rule]);
        }
        let Ok(Rule::And(children)) = normalize(rule) else {
            panic!("expected one AND group");
        };
        assert_eq!(children.len(), 501);
        assert_eq!(children.last(), Some(&segment("last")));
    }

    #[test]
    fn thirty_three_levels_are_refused() {
        let mut rule = opted_in();
        for _ in 0..31 {
            rule = not(rule);
        }
        assert!(normalize(rule.clone()).is_ok());
        assert_eq!(normalize(not(rule)), Err(RuleError::TooDeep));
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_without_recursion() {
        let mut rule = opted_in();
        for _ in 0..100_000 {
            rule = not(rule);
        }
        assert_eq!(normalize(rule), Err(RuleError::TooDeep));
    }

    #[test]
    fn node_and_list_limits_apply_after_normalising() {
        let rule = Rule::Or(vec![opted_in(); 1_000]);
        assert_eq!(normalize(rule), Err(RuleError::TooManyNodes));

        let values: Vec<String> = (0..10_001).map(|index| format!("L{index}")).collect();
        let mut repeated = values.clone();
        repeated.truncate(10_000);
        repeated.extend(repeated.clone());
        let list = |values| {
            Rule::Predicate(Predicate::Set {
                field: SetField::KlaviyoList,
                values,
            })
        };
        assert!(normalize(list(repeated)).is_ok());
        assert_eq!(
            normalize(list(values)),
            Err(RuleError::TooManyValues {
                qualifier: "klaviyo_list"
            })
        );
    }
}
