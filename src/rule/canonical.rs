//! The canonical text of a rule: the one way RULES.md writes a given tree.
//!
//! Keywords are upper-case, qualifier names lower-case, tokens separated by
//! single spaces, and a group is parenthesised only where precedence needs
//! it: an `OR` under an `AND`, and any group under a `NOT`. For a normalised
//! tree, parsing the text gives the same tree back.

use std::fmt::{self, Display, Formatter, Write as _};

use chrono::{Datelike, NaiveDate};

use super::ast::{
    Comparison, Duration, DurationUnit, EventKind, NumberField, NumberTest, Predicate,
    PresenceField, Rule, SetField, Window,
};
use super::values::format_cents;

/// How tightly a piece of text binds; a child that binds less tightly than
/// its place demands is put in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Binding {
    Or,
    And,
    /// A qualifier or a `NOT`.
    Unary,
}

impl Display for Rule {
    /// Writes the canonical text. A tree that is not normalised still gets a
    /// readable text (an empty group shows as `()`), but only a normalised
    /// tree is promised to parse back to itself.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_rule(f, self, Binding::Or)
    }
}

impl Display for Predicate {
    /// Writes the qualifier as it appears in the canonical text.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_predicate(f, self)
    }
}

/// How tightly `rule` binds once written; a one-child group is written as its child.
fn binding(rule: &Rule) -> Binding {
    match rule {
        Rule::And(children) | Rule::Or(children) if children.len() == 1 => {
            children.first().map_or(Binding::Unary, binding)
        }
        Rule::Or(children) if !children.is_empty() => Binding::Or,
        Rule::And(children) if !children.is_empty() => Binding::And,
        _ => Binding::Unary,
    }
}

/// Writes `rule` where at least `needed` binding is required.
fn write_rule(f: &mut Formatter<'_>, rule: &Rule, needed: Binding) -> fmt::Result {
    if binding(rule) < needed {
        f.write_char('(')?;
        write_bare(f, rule)?;
        return f.write_char(')');
    }
    write_bare(f, rule)
}

fn write_bare(f: &mut Formatter<'_>, rule: &Rule) -> fmt::Result {
    match rule {
        Rule::And(children) | Rule::Or(children) if children.len() < 2 => match children.first() {
            Some(only) => write_bare(f, only),
            None => f.write_str("()"),
        },
        Rule::And(children) => write_joined(f, children, " AND ", Binding::And),
        Rule::Or(children) => write_joined(f, children, " OR ", Binding::Or),
        Rule::Not(child) => {
            f.write_str("NOT ")?;
            write_rule(f, child, Binding::Unary)
        }
        Rule::Predicate(predicate) => write_predicate(f, predicate),
    }
}

fn write_joined(
    f: &mut Formatter<'_>,
    children: &[Rule],
    separator: &str,
    needed: Binding,
) -> fmt::Result {
    for (index, child) in children.iter().enumerate() {
        if index > 0 {
            f.write_str(separator)?;
        }
        write_rule(f, child, needed)?;
    }
    Ok(())
}

fn write_predicate(f: &mut Formatter<'_>, predicate: &Predicate) -> fmt::Result {
    match predicate {
        Predicate::OptedIn => f.write_str("opted_in"),
        Predicate::Event {
            kind,
            broadcast,
            window,
        } => {
            f.write_str(event_name(*kind))?;
            if let Some(broadcast) = broadcast {
                f.write_str(" broadcast ")?;
                write_string(f, broadcast)?;
            }
            if let Some(window) = window {
                f.write_char(' ')?;
                write_window(f, *window)?;
            }
            Ok(())
        }
        Predicate::Answered {
            experience,
            question,
            answer,
        } => {
            f.write_str("answered(")?;
            write_string(f, experience)?;
            f.write_str(", ")?;
            write_string(f, question)?;
            if let Some(answer) = answer {
                f.write_str(", ")?;
                write_string(f, answer)?;
            }
            f.write_char(')')
        }
        Predicate::Set { field, values } => {
            f.write_str(set_field_name(*field))?;
            match values.as_slice() {
                [value] => {
                    f.write_str(" = ")?;
                    write_string(f, value)
                }
                values => {
                    f.write_str(" IN ")?;
                    write_list(f, values)
                }
            }
        }
        Predicate::Number { field, test } => {
            f.write_str(number_field_name(*field))?;
            match test {
                NumberTest::Compare(comparison, value) => {
                    write!(f, " {} ", comparison_symbol(*comparison))?;
                    write_number(f, *field, *value)
                }
                NumberTest::Between(low, high) => {
                    f.write_str(" BETWEEN ")?;
                    write_number(f, *field, *low)?;
                    f.write_str(" AND ")?;
                    write_number(f, *field, *high)
                }
            }
        }
        Predicate::Created(window) => {
            f.write_str("created ")?;
            write_window(f, *window)
        }
        Predicate::Customers(ids) => {
            f.write_str("customer IN ")?;
            write_list(f, ids)
        }
        Predicate::Segment(id) => {
            f.write_str("segment = ")?;
            write_string(f, id)
        }
        Predicate::Presence { field, is_set } => {
            let test = if *is_set { "IS SET" } else { "IS NOT SET" };
            write!(f, "{} {test}", presence_field_name(*field))
        }
    }
}

/// `("a", "b")`
fn write_list(f: &mut Formatter<'_>, values: &[String]) -> fmt::Result {
    f.write_char('(')?;
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        write_string(f, value)?;
    }
    f.write_char(')')
}

/// A quoted string with `"` and `\` escaped.
fn write_string(f: &mut Formatter<'_>, value: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in value.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

fn write_number(f: &mut Formatter<'_>, field: NumberField, value: u64) -> fmt::Result {
    match field {
        NumberField::OrderCount => write!(f, "{value}"),
        _ => f.write_str(&format_cents(value)),
    }
}

fn write_window(f: &mut Formatter<'_>, window: Window) -> fmt::Result {
    match window {
        Window::Within(Duration { amount, unit }) => {
            let unit = match unit {
                DurationUnit::Hours => 'h',
                DurationUnit::Days => 'd',
                DurationUnit::Weeks => 'w',
            };
            write!(f, "WITHIN {amount}{unit}")
        }
        Window::Between(from, to) => {
            f.write_str("BETWEEN ")?;
            write_date(f, from)?;
            f.write_str(" AND ")?;
            write_date(f, to)
        }
        Window::Since(date) => {
            f.write_str("SINCE ")?;
            write_date(f, date)
        }
        Window::Before(date) => {
            f.write_str("BEFORE ")?;
            write_date(f, date)
        }
    }
}

fn write_date(f: &mut Formatter<'_>, date: NaiveDate) -> fmt::Result {
    write!(
        f,
        "{:04}-{:02}-{:02}",
        date.year(),
        date.month(),
        date.day()
    )
}

fn comparison_symbol(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Eq => "=",
        Comparison::Ne => "!=",
        Comparison::Lt => "<",
        Comparison::Le => "<=",
        Comparison::Gt => ">",
        Comparison::Ge => ">=",
    }
}

/// The text-form name of an event qualifier.
pub(crate) fn event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Ordered => "ordered",
        EventKind::Messaged => "messaged",
        EventKind::Clicked => "clicked",
        EventKind::AbandonedCart => "abandoned_cart",
    }
}

/// The text-form name of a set qualifier.
pub(crate) fn set_field_name(field: SetField) -> &'static str {
    match field {
        SetField::Tag => "tag",
        SetField::State => "state",
        SetField::Timezone => "timezone",
        SetField::KlaviyoList => "klaviyo_list",
    }
}

/// The text-form name of a numeric qualifier.
pub(crate) fn number_field_name(field: NumberField) -> &'static str {
    match field {
        NumberField::Spent => "spent",
        NumberField::LifetimeSpend => "lifetime_spend",
        NumberField::AbandonedCartValue => "abandoned_cart_value",
        NumberField::OrderCount => "order_count",
    }
}

/// The text-form name of a field that `IS SET` tests.
pub(crate) fn presence_field_name(field: PresenceField) -> &'static str {
    match field {
        PresenceField::Tag => "tag",
        PresenceField::State => "state",
        PresenceField::Timezone => "timezone",
        PresenceField::KlaviyoList => "klaviyo_list",
        PresenceField::LifetimeSpend => "lifetime_spend",
        PresenceField::AbandonedCartValue => "abandoned_cart_value",
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::super::{MAX_AMOUNT_CENTS, check_limits, normalize, parse};
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("a real date")
    }

    fn leaf(predicate: Predicate) -> Rule {
        Rule::Predicate(predicate)
    }

    fn opted_in() -> Rule {
        leaf(Predicate::OptedIn)
    }

    fn ordered() -> Rule {
        leaf(Predicate::Event {
            kind: EventKind::Ordered,
            broadcast: None,
            window: None,
        })
    }

    fn messaged() -> Rule {
        leaf(Predicate::Event {
            kind: EventKind::Messaged,
            broadcast: None,
            window: None,
        })
    }

    fn not(rule: Rule) -> Rule {
        Rule::Not(Box::new(rule))
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn every_qualifier_has_its_canonical_text() {
        let cases = [
            (leaf(Predicate::OptedIn), "opted_in"),
            (ordered(), "ordered"),
            (
                leaf(Predicate::Event {
                    kind: EventKind::AbandonedCart,
                    broadcast: None,
                    window: Some(Window::Within(Duration {
                        amount: 24,
                        unit: DurationUnit::Hours,
                    })),
                }),
                "abandoned_cart WITHIN 24h",
            ),
            (
                leaf(Predicate::Event {
                    kind: EventKind::Clicked,
                    broadcast: Some("b".to_owned()),
                    window: Some(Window::Within(Duration {
                        amount: 7,
                        unit: DurationUnit::Days,
                    })),
                }),
                "clicked broadcast \"b\" WITHIN 7d",
            ),
            (
                leaf(Predicate::Event {
                    kind: EventKind::Messaged,
                    broadcast: None,
                    window: Some(Window::Within(Duration {
                        amount: 2,
                        unit: DurationUnit::Weeks,
                    })),
                }),
                "messaged WITHIN 2w",
            ),
            (
                leaf(Predicate::Event {
                    kind: EventKind::Ordered,
                    broadcast: None,
                    window: Some(Window::Since(date(2026, 3, 1))),
                }),
                "ordered SINCE 2026-03-01",
            ),
            (
                leaf(Predicate::Event {
                    kind: EventKind::Ordered,
                    broadcast: None,
                    window: Some(Window::Before(date(998, 7, 4))),
                }),
                "ordered BEFORE 0998-07-04",
            ),
            (
                leaf(Predicate::Created(Window::Between(
                    date(2026, 1, 1),
                    date(2026, 1, 31),
                ))),
                "created BETWEEN 2026-01-01 AND 2026-01-31",
            ),
            (
                leaf(Predicate::Answered {
                    experience: "e".to_owned(),
                    question: "q".to_owned(),
                    answer: Some("a".to_owned()),
                }),
                "answered(\"e\", \"q\", \"a\")",
            ),
            (
                leaf(Predicate::Answered {
                    experience: "e".to_owned(),
                    question: "q".to_owned(),
                    answer: None,
                }),
                "answered(\"e\", \"q\")",
            ),
            (
                leaf(Predicate::Set {
                    field: SetField::Tag,
                    values: strings(&["vip"]),
                }),
                "tag = \"vip\"",
            ),
            (
                leaf(Predicate::Set {
                    field: SetField::State,
                    values: strings(&["CA", "NY"]),
                }),
                "state IN (\"CA\", \"NY\")",
            ),
            (
                leaf(Predicate::Set {
                    field: SetField::Timezone,
                    values: strings(&["America/Chicago"]),
                }),
                "timezone = \"America/Chicago\"",
            ),
            (
                leaf(Predicate::Set {
                    field: SetField::KlaviyoList,
                    values: strings(&["L1", "l1"]),
                }),
                "klaviyo_list IN (\"L1\", \"l1\")",
            ),
            (
                leaf(Predicate::Number {
                    field: NumberField::Spent,
                    test: NumberTest::Compare(Comparison::Ge, 10_000),
                }),
                "spent >= 100.00",
            ),
            (
                leaf(Predicate::Number {
                    field: NumberField::LifetimeSpend,
                    test: NumberTest::Between(5_000, 25_050),
                }),
                "lifetime_spend BETWEEN 50.00 AND 250.50",
            ),
            (
                leaf(Predicate::Number {
                    field: NumberField::AbandonedCartValue,
                    test: NumberTest::Compare(Comparison::Ne, 5),
                }),
                "abandoned_cart_value != 0.05",
            ),
            (
                leaf(Predicate::Number {
                    field: NumberField::OrderCount,
                    test: NumberTest::Compare(Comparison::Lt, 2),
                }),
                "order_count < 2",
            ),
            (
                leaf(Predicate::Number {
                    field: NumberField::OrderCount,
                    test: NumberTest::Between(1, 3),
                }),
                "order_count BETWEEN 1 AND 3",
            ),
            (
                leaf(Predicate::Customers(strings(&["c1"]))),
                "customer IN (\"c1\")",
            ),
            (
                leaf(Predicate::Customers(strings(&["c1", "c2"]))),
                "customer IN (\"c1\", \"c2\")",
            ),
            (leaf(Predicate::Segment("s".to_owned())), "segment = \"s\""),
            (
                leaf(Predicate::Presence {
                    field: PresenceField::AbandonedCartValue,
                    is_set: true,
                }),
                "abandoned_cart_value IS SET",
            ),
            (
                leaf(Predicate::Presence {
                    field: PresenceField::KlaviyoList,
                    is_set: false,
                }),
                "klaviyo_list IS NOT SET",
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(rule.to_string(), expected);
        }
    }

    #[test]
    fn every_comparison_has_its_symbol() {
        let cases = [
            (Comparison::Eq, "spent = 1.00"),
            (Comparison::Ne, "spent != 1.00"),
            (Comparison::Lt, "spent < 1.00"),
            (Comparison::Le, "spent <= 1.00"),
            (Comparison::Gt, "spent > 1.00"),
            (Comparison::Ge, "spent >= 1.00"),
        ];
        for (comparison, expected) in cases {
            let rule = leaf(Predicate::Number {
                field: NumberField::Spent,
                test: NumberTest::Compare(comparison, 100),
            });
            assert_eq!(rule.to_string(), expected);
        }
    }

    #[test]
    fn strings_are_quoted_with_escapes() {
        let rule = leaf(Predicate::Segment(r#"say "hi" \ bye"#.to_owned()));
        assert_eq!(rule.to_string(), r#"segment = "say \"hi\" \\ bye""#);
    }

    #[test]
    fn only_needed_parentheses_are_written() {
        let cases = [
            (
                Rule::And(vec![Rule::Or(vec![opted_in(), ordered()]), messaged()]),
                "(opted_in OR ordered) AND messaged",
            ),
            (
                Rule::Or(vec![
                    Rule::And(vec![opted_in(), ordered()]),
                    not(messaged()),
                ]),
                "opted_in AND ordered OR NOT messaged",
            ),
            (
                not(Rule::And(vec![opted_in(), ordered()])),
                "NOT (opted_in AND ordered)",
            ),
            (
                not(Rule::Or(vec![opted_in(), ordered()])),
                "NOT (opted_in OR ordered)",
            ),
            (not(not(opted_in())), "NOT NOT opted_in"),
            (
                Rule::And(vec![not(opted_in()), ordered(), messaged()]),
                "NOT opted_in AND ordered AND messaged",
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(rule.to_string(), expected);
        }
    }

    #[test]
    fn unnormalised_trees_still_render_readably() {
        assert_eq!(Rule::And(vec![]).to_string(), "()");
        assert_eq!(
            not(Rule::And(vec![Rule::Or(vec![opted_in(), ordered()])])).to_string(),
            "NOT (opted_in OR ordered)"
        );
        assert_eq!(
            Rule::And(vec![opted_in(), Rule::And(vec![ordered(), messaged()])]).to_string(),
            "opted_in AND ordered AND messaged"
        );
    }

    #[test]
    fn sloppy_text_renders_canonically() {
        let cases = [
            (
                "opted_in and not ( messaged within 7D )",
                "opted_in AND NOT messaged WITHIN 7d",
            ),
            (r#"Tag IN (" VIP ")"#, "tag = \"vip\""),
            (
                "state in (\"california\", \"NEW YORK\", \"ca\") or timezone = \"america/new_york\"",
                "state IN (\"CA\", \"NY\") OR timezone = \"America/New_York\"",
            ),
            ("spent>=100", "spent >= 100.00"),
            ("spent >= 0.5", "spent >= 0.50"),
            ("order_count = 007", "order_count = 7"),
            ("ordered within 007w", "ordered WITHIN 7w"),
            (
                "((opted_in or ordered)) and (messaged and (segment = \"s\"))",
                "(opted_in OR ordered) AND messaged AND segment = \"s\"",
            ),
            ("NOT(NOT(opted_in))", "NOT NOT opted_in"),
        ];
        for (text, expected) in cases {
            let rule = parse(text).expect("valid rule");
            assert_eq!(rule.to_string(), expected, "{text}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// An opaque id: non-empty, any characters but line breaks, with
        /// quotes and backslashes likely.
        fn id() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9 _\"\\\\é-]{1,8}"
        }

        /// A normalised tag: lower-case, no white space at either end.
        fn tag() -> impl Strategy<Value = String> {
            "[a-z0-9_\"\\\\é-]([a-z0-9 _\"\\\\é-]{0,6}[a-z0-9_\"\\\\é-])?"
        }

        fn state() -> impl Strategy<Value = String> {
            prop::sample::select(vec!["CA", "NY", "TX", "DC", "PR", "VI", "MP"])
                .prop_map(str::to_owned)
        }

        fn time_zone() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "UTC",
                "America/Chicago",
                "America/New_York",
                "Europe/Paris",
                "Pacific/Honolulu",
            ])
            .prop_map(str::to_owned)
        }

        /// Keeps the first of repeated values, in order.
        fn first_of_each(values: Vec<String>) -> Vec<String> {
            let mut kept: Vec<String> = Vec::new();
            for value in values {
                if !kept.contains(&value) {
                    kept.push(value);
                }
            }
            kept
        }

        /// Any date from 0000-01-01 to 9999-12-31.
        fn any_date() -> impl Strategy<Value = NaiveDate> {
            (-365_i32..=3_652_059).prop_filter_map("a date", NaiveDate::from_num_days_from_ce_opt)
        }

        fn window() -> impl Strategy<Value = Window> {
            let unit = prop::sample::select(vec![
                DurationUnit::Hours,
                DurationUnit::Days,
                DurationUnit::Weeks,
            ]);
            prop_oneof![
                (1_u32..=u32::MAX, unit)
                    .prop_map(|(amount, unit)| Window::Within(Duration { amount, unit })),
                (any_date(), any_date()).prop_map(|(a, b)| Window::Between(a.min(b), a.max(b))),
                any_date().prop_map(Window::Since),
                any_date().prop_map(Window::Before),
            ]
        }

        fn number_test(max: u64) -> impl Strategy<Value = NumberTest> {
            let comparison = prop::sample::select(vec![
                Comparison::Eq,
                Comparison::Ne,
                Comparison::Lt,
                Comparison::Le,
                Comparison::Gt,
                Comparison::Ge,
            ]);
            prop_oneof![
                (comparison, 0..=max)
                    .prop_map(|(comparison, value)| { NumberTest::Compare(comparison, value) }),
                (0..=max, 0..=max).prop_map(|(a, b)| NumberTest::Between(a.min(b), a.max(b))),
            ]
        }

        fn values(value: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(value, 1..5).prop_map(first_of_each)
        }

        fn predicate() -> impl Strategy<Value = Predicate> {
            let event_kind = prop::sample::select(vec![
                EventKind::Ordered,
                EventKind::Messaged,
                EventKind::Clicked,
                EventKind::AbandonedCart,
            ]);
            let amount_field = prop::sample::select(vec![
                NumberField::Spent,
                NumberField::LifetimeSpend,
                NumberField::AbandonedCartValue,
            ]);
            let presence_field = prop::sample::select(vec![
                PresenceField::Tag,
                PresenceField::State,
                PresenceField::Timezone,
                PresenceField::KlaviyoList,
                PresenceField::LifetimeSpend,
                PresenceField::AbandonedCartValue,
            ]);
            prop_oneof![
                Just(Predicate::OptedIn),
                (event_kind, prop::option::of(window())).prop_map(|(kind, window)| {
                    Predicate::Event {
                        kind,
                        broadcast: None,
                        window,
                    }
                }),
                (id(), prop::option::of(window())).prop_map(|(broadcast, window)| {
                    Predicate::Event {
                        kind: EventKind::Clicked,
                        broadcast: Some(broadcast),
                        window,
                    }
                }),
                (id(), id(), prop::option::of("[a-zA-Z \"\\\\]{0,5}")).prop_map(
                    |(experience, question, answer)| Predicate::Answered {
                        experience,
                        question,
                        answer,
                    }
                ),
                values(tag()).prop_map(|values| Predicate::Set {
                    field: SetField::Tag,
                    values
                }),
                values(state()).prop_map(|values| Predicate::Set {
                    field: SetField::State,
                    values
                }),
                values(time_zone()).prop_map(|values| Predicate::Set {
                    field: SetField::Timezone,
                    values
                }),
                values(id()).prop_map(|values| Predicate::Set {
                    field: SetField::KlaviyoList,
                    values
                }),
                (amount_field, number_test(MAX_AMOUNT_CENTS))
                    .prop_map(|(field, test)| Predicate::Number { field, test }),
                number_test(999_999_999_999).prop_map(|test| Predicate::Number {
                    field: NumberField::OrderCount,
                    test
                }),
                window().prop_map(Predicate::Created),
                values(id()).prop_map(Predicate::Customers),
                id().prop_map(Predicate::Segment),
                (presence_field, any::<bool>())
                    .prop_map(|(field, is_set)| Predicate::Presence { field, is_set }),
            ]
        }

        /// An `AND` (or `OR`) of `children`, taking over the children of any
        /// child group of the same operator, as a normalised tree must.
        fn group(is_or: bool, children: Vec<Rule>) -> Rule {
            let mut flat = Vec::new();
            for child in children {
                match child {
                    Rule::Or(grandchildren) if is_or => flat.extend(grandchildren),
                    Rule::And(grandchildren) if !is_or => flat.extend(grandchildren),
                    other => flat.push(other),
                }
            }
            if is_or {
                Rule::Or(flat)
            } else {
                Rule::And(flat)
            }
        }

        /// Random normalised trees, a few levels deep.
        fn normalised_rule() -> impl Strategy<Value = Rule> {
            predicate()
                .prop_map(Rule::Predicate)
                .prop_recursive(5, 48, 4, |inner| {
                    prop_oneof![
                        inner.clone().prop_map(|rule| Rule::Not(Box::new(rule))),
                        prop::collection::vec(inner.clone(), 2..5)
                            .prop_map(|children| group(false, children)),
                        prop::collection::vec(inner, 2..5)
                            .prop_map(|children| group(true, children)),
                    ]
                })
        }

        /// Trees as the structured form may send them: nested groups of one
        /// operator, one-child groups and values spelled in any case.
        fn raw_rule() -> impl Strategy<Value = Rule> {
            let sloppy = prop_oneof![
                predicate(),
                prop::collection::vec(
                    prop::sample::select(vec![" VIP", "vip ", "Vip", "new", "NEW "]),
                    1..4
                )
                .prop_map(|values| Predicate::Set {
                    field: SetField::Tag,
                    values: values.into_iter().map(str::to_owned).collect(),
                }),
                prop::collection::vec(
                    prop::sample::select(vec!["ca", "California", "CA", "new york", "Ny"]),
                    1..4
                )
                .prop_map(|values| Predicate::Set {
                    field: SetField::State,
                    values: values.into_iter().map(str::to_owned).collect(),
                }),
                prop::collection::vec(
                    prop::sample::select(vec!["america/chicago", "UTC", "utc", "Europe/paris"]),
                    1..4
                )
                .prop_map(|values| Predicate::Set {
                    field: SetField::Timezone,
                    values: values.into_iter().map(str::to_owned).collect(),
                }),
                prop::collection::vec(prop::sample::select(vec!["c1", "c2", "C1"]), 1..4).prop_map(
                    |ids| { Predicate::Customers(ids.into_iter().map(str::to_owned).collect()) }
                ),
            ];
            sloppy
                .prop_map(Rule::Predicate)
                .prop_recursive(6, 48, 4, |inner| {
                    prop_oneof![
                        inner.clone().prop_map(|rule| Rule::Not(Box::new(rule))),
                        prop::collection::vec(inner.clone(), 1..4).prop_map(Rule::And),
                        prop::collection::vec(inner, 1..4).prop_map(Rule::Or),
                    ]
                })
        }

        /// Pieces of rule text, valid and not, to glue into random input.
        fn fragment() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "opted_in",
                "ordered",
                "clicked",
                "broadcast",
                "answered",
                "tag",
                "state",
                "spent",
                "order_count",
                "created",
                "customer",
                "segment",
                "AND",
                "OR",
                "NOT",
                "IN",
                "IS",
                "SET",
                "BETWEEN",
                "WITHIN",
                "SINCE",
                "BEFORE",
                "(",
                ")",
                ",",
                "=",
                "!=",
                "<",
                ">=",
                "\"vip\"",
                "\"CA\"",
                "\"x",
                "100",
                "1.5",
                "1.234",
                "7d",
                "0d",
                "2026-02-30",
                "2026-03-01",
                "\\",
                "\n",
                " ",
                "é",
                "@",
            ])
        }

        proptest! {
            #[test]
            fn canonical_text_parses_back_to_the_same_tree(rule in normalised_rule()) {
                let text = rule.to_string();
                let parsed = parse(&text);
                prop_assert_eq!(parsed.as_ref(), Ok(&rule), "text: {}", text);
                if let Ok(parsed) = parsed {
                    prop_assert_eq!(parsed.to_string(), text);
                }
            }

            #[test]
            fn normalised_trees_are_left_as_they_are(rule in normalised_rule()) {
                prop_assert_eq!(check_limits(&rule), Ok(()));
                prop_assert_eq!(normalize(rule.clone()), Ok(rule));
            }

            #[test]
            fn normalize_agrees_with_parsing_the_rendered_tree(rule in raw_rule()) {
                let text = rule.to_string();
                let normalised = normalize(rule);
                let parsed = parse(&text);
                prop_assert!(normalised.is_ok(), "text: {}", text);
                prop_assert_eq!(normalised.ok(), parsed.ok(), "text: {}", text);
            }

            #[test]
            fn random_text_never_panics_and_accepted_text_is_stable(
                fragments in prop::collection::vec(fragment(), 0..24),
            ) {
                let text = fragments.join(" ");
                if let Ok(rule) = parse(&text) {
                    let canonical = rule.to_string();
                    prop_assert_eq!(parse(&canonical), Ok(rule), "text: {}", text);
                }
            }

            #[test]
            fn arbitrary_characters_never_panic(text in "\\PC{0,64}") {
                let _ = parse(&text);
            }
        }
    }
}
