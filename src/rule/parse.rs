//! The text form of RULES.md, parsed into a normalised [`Rule`].
//!
//! A recursive-descent parser over the lazy [`Lexer`]: `or` over `and` over
//! `unary`, so `NOT` binds tighter than `AND`, which binds tighter than `OR`.
//! Values are normalised and limits enforced as the text is read, so every
//! error points at the first bad token. Recursion happens only through `(`
//! and `NOT`, and their nesting is capped at [`MAX_RULE_DEPTH`] before the
//! parser goes deeper, so no input can exhaust the stack.

use std::collections::HashSet;

use super::ast::{
    Comparison, EventKind, NumberField, NumberTest, Predicate, PresenceField, Rule, SetField,
    Window,
};
use super::canonical::{number_field_name, set_field_name};
use super::error::{ParseError, RuleError};
use super::lexer::{Lexer, Position, Token, TokenKind, position_of};
use super::limits::{
    MAX_IN_VALUES, MAX_NUMBER_DIGITS, MAX_RULE_DEPTH, MAX_RULE_NODES, MAX_RULE_TEXT_BYTES,
};
use super::values::{
    NumberProblem, id_value, looks_like_date, parse_cents, parse_count, parse_date, parse_duration,
    set_value, text_value,
};

/// Parses a rule in the text form of RULES.md into its normalised tree.
///
/// Keywords and names are case-insensitive, values are normalised, `AND` and
/// `OR` chains are flattened and the limits are enforced. The error names
/// the line and column of the first bad token and what was expected there.
pub fn parse(text: &str) -> Result<Rule, ParseError> {
    if text.len() > MAX_RULE_TEXT_BYTES {
        let position = position_of(text, MAX_RULE_TEXT_BYTES);
        return Err(position.error(RuleError::TextTooLong.to_string()));
    }

    let mut parser = Parser {
        lexer: Lexer::new(text),
        peeked: None,
        nesting: 0,
        nodes: 0,
    };
    let mut parsed = parser.or()?;

    let end = parser.next()?;
    if end.kind != TokenKind::End {
        return Err(unexpected(&end, "`AND`, `OR` or end of text"));
    }
    parser.count_once(&mut parsed)?;
    Ok(parsed.rule)
}

/// A parsed piece of rule with what the limits need to know about it.
struct Parsed {
    rule: Rule,
    /// Where its text starts, for errors about the piece as a whole.
    start: Position,
    /// Its depth as a tree: 1 for a lone qualifier.
    height: usize,
    /// Whether it is in the node count yet. A group is counted only once it
    /// is known not to be merged into a parent group of the same operator.
    counted: bool,
}

/// An `AND` or `OR` group being collected.
struct Group {
    is_or: bool,
    children: Vec<Rule>,
    start: Position,
    /// The greatest height among the children.
    child_height: usize,
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// How many `(` and `NOT` enclose the current position.
    nesting: usize,
    /// Qualifiers and operators counted so far.
    nodes: usize,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<&Token<'a>, ParseError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn next(&mut self) -> Result<Token<'a>, ParseError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    /// Takes the next token if it is the keyword `word`.
    fn next_if_word(&mut self, word: &str) -> Result<bool, ParseError> {
        let matches = self.peek()?.is_word(word);
        if matches {
            self.next()?;
        }
        Ok(matches)
    }

    /// Takes the next token, which must be of `kind`; `expected` words the error.
    fn expect(&mut self, kind: TokenKind, expected: &str) -> Result<Token<'a>, ParseError> {
        let token = self.next()?;
        if token.kind != kind {
            return Err(unexpected(&token, expected));
        }
        Ok(token)
    }

    /// `or = and , { "OR" , and }`
    fn or(&mut self) -> Result<Parsed, ParseError> {
        let first = self.and()?;
        if !self.peek()?.is_word("or") {
            return Ok(first);
        }

        let mut group = Group::new(true, first.start);
        self.add(&mut group, first)?;
        while self.next_if_word("or")? {
            let child = self.and()?;
            self.add(&mut group, child)?;
        }
        group.close()
    }

    /// `and = unary , { "AND" , unary }`
    fn and(&mut self) -> Result<Parsed, ParseError> {
        let first = self.unary()?;
        if !self.peek()?.is_word("and") {
            return Ok(first);
        }

        let mut group = Group::new(false, first.start);
        self.add(&mut group, first)?;
        while self.next_if_word("and")? {
            let child = self.unary()?;
            self.add(&mut group, child)?;
        }
        group.close()
    }

    /// `unary = "NOT" , unary | "(" , rule , ")" | predicate`
    fn unary(&mut self) -> Result<Parsed, ParseError> {
        let token = self.peek()?.clone();

        if token.is_word("not") {
            self.next()?;
            self.enter(token.position)?;
            self.count(token.position)?;
            let mut inner = self.unary()?;
            self.nesting -= 1;

            self.count_once(&mut inner)?;
            let height = inner.height + 1;
            if height > MAX_RULE_DEPTH {
                return Err(token.position.error(RuleError::TooDeep.to_string()));
            }
            return Ok(Parsed {
                rule: Rule::Not(Box::new(inner.rule)),
                start: token.position,
                height,
                counted: true,
            });
        }

        if token.kind == TokenKind::OpenParen {
            self.next()?;
            self.enter(token.position)?;
            let mut inner = self.or()?;
            self.expect(TokenKind::CloseParen, "`AND`, `OR` or `)`")?;
            self.nesting -= 1;

            inner.start = token.position;
            return Ok(inner);
        }

        self.count(token.position)?;
        let predicate = self.predicate()?;
        Ok(Parsed {
            rule: Rule::Predicate(predicate),
            start: token.position,
            height: 1,
            counted: true,
        })
    }

    /// Steps into a `(` or `NOT`, refusing to go past the depth limit.
    fn enter(&mut self, at: Position) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_RULE_DEPTH {
            return Err(at.error(RuleError::TooDeep.to_string()));
        }
        Ok(())
    }

    /// Counts one node that starts at `at`.
    fn count(&mut self, at: Position) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_RULE_NODES {
            return Err(at.error(RuleError::TooManyNodes.to_string()));
        }
        Ok(())
    }

    /// Counts a piece that is now final, unless it already is counted.
    fn count_once(&mut self, parsed: &mut Parsed) -> Result<(), ParseError> {
        if !parsed.counted {
            self.count(parsed.start)?;
            parsed.counted = true;
        }
        Ok(())
    }

    /// Adds a child to a group, merging it when it is a group of the same
    /// operator. Only a group written in parentheses can arrive here with the
    /// same operator, and such a group is not counted yet, so merging it
    /// needs no change to the count.
    fn add(&mut self, group: &mut Group, mut child: Parsed) -> Result<(), ParseError> {
        match child.rule {
            Rule::Or(grandchildren) if group.is_or => group.merge(child.height, grandchildren),
            Rule::And(grandchildren) if !group.is_or => group.merge(child.height, grandchildren),
            _ => {
                self.count_once(&mut child)?;
                group.child_height = group.child_height.max(child.height);
                group.children.push(child.rule);
            }
        }
        Ok(())
    }

    /// One qualifier, from its name on.
    fn predicate(&mut self) -> Result<Predicate, ParseError> {
        let name = self.next()?;
        let lower_name = match name.kind {
            TokenKind::Word => name.text.to_ascii_lowercase(),
            _ => String::new(),
        };

        match lower_name.as_str() {
            "opted_in" => Ok(Predicate::OptedIn),
            "ordered" => self.event(EventKind::Ordered, None),
            "messaged" => self.event(EventKind::Messaged, None),
            "abandoned_cart" => self.event(EventKind::AbandonedCart, None),
            "clicked" => {
                let broadcast = if self.next_if_word("broadcast")? {
                    Some(self.string_value(|id| id_value("broadcast id", id))?)
                } else {
                    None
                };
                self.event(EventKind::Clicked, broadcast)
            }
            "answered" => self.answered(),
            "tag" => self.set(SetField::Tag, PresenceField::Tag),
            "state" => self.set(SetField::State, PresenceField::State),
            "timezone" => self.set(SetField::Timezone, PresenceField::Timezone),
            "klaviyo_list" => self.set(SetField::KlaviyoList, PresenceField::KlaviyoList),
            "spent" => self.number(NumberField::Spent, None),
            "order_count" => self.number(NumberField::OrderCount, None),
            "lifetime_spend" => self.number(
                NumberField::LifetimeSpend,
                Some(PresenceField::LifetimeSpend),
            ),
            "abandoned_cart_value" => self.number(
                NumberField::AbandonedCartValue,
                Some(PresenceField::AbandonedCartValue),
            ),
            "created" => match self.window()? {
                Some(window) => Ok(Predicate::Created(window)),
                None => {
                    let found = self.next()?;
                    Err(unexpected(
                        &found,
                        "a window (`WITHIN`, `BETWEEN`, `SINCE` or `BEFORE`) after `created`",
                    ))
                }
            },
            "customer" => {
                let keyword = self.next()?;
                if !keyword.is_word("in") {
                    return Err(unexpected(&keyword, "`IN` after `customer`"));
                }
                let ids = self.list("customer", |id| id_value("customer id", id))?;
                Ok(Predicate::Customers(ids))
            }
            "segment" => {
                self.expect(TokenKind::Eq, "`=` after `segment`")?;
                let id = self.string_value(|id| id_value("segment id", id))?;
                Ok(Predicate::Segment(id))
            }
            _ => Err(unexpected(&name, "a qualifier")),
        }
    }

    /// `event [window]`, the name already read.
    fn event(
        &mut self,
        kind: EventKind,
        broadcast: Option<String>,
    ) -> Result<Predicate, ParseError> {
        let window = self.window()?;
        Ok(Predicate::Event {
            kind,
            broadcast,
            window,
        })
    }

    /// `answered("EXP", "QUESTION" [, "ANSWER"])`, the name already read.
    fn answered(&mut self) -> Result<Predicate, ParseError> {
        self.expect(TokenKind::OpenParen, "`(` after `answered`")?;
        let experience = self.string_value(|id| id_value("experience id", id))?;
        self.expect(TokenKind::Comma, "`,`")?;
        let question = self.string_value(|id| id_value("question id", id))?;

        let separator = self.next()?;
        let answer = match separator.kind {
            TokenKind::CloseParen => None,
            TokenKind::Comma => {
                let answer = self.string_value(|text| text_value("answer", text))?;
                self.expect(TokenKind::CloseParen, "`)`")?;
                Some(answer)
            }
            _ => return Err(unexpected(&separator, "`,` or `)`")),
        };

        Ok(Predicate::Answered {
            experience,
            question,
            answer,
        })
    }

    /// `= "v"`, `IN ("a", ...)` or `IS [NOT] SET` after a set field.
    fn set(&mut self, field: SetField, presence: PresenceField) -> Result<Predicate, ParseError> {
        let name = set_field_name(field);
        let operator = self.next()?;

        let values = if operator.kind == TokenKind::Eq {
            vec![self.string_value(|value| set_value(field, &value))?]
        } else if operator.is_word("in") {
            self.list(name, |value| set_value(field, &value))?
        } else if operator.is_word("is") {
            return self.presence(presence);
        } else {
            return Err(unexpected(
                &operator,
                &format!("`=`, `IN` or `IS` after `{name}`"),
            ));
        };

        Ok(Predicate::Set { field, values })
    }

    /// `<cmp> N`, `BETWEEN A AND B` or, where the field may be unknown, `IS [NOT] SET`.
    fn number(
        &mut self,
        field: NumberField,
        presence: Option<PresenceField>,
    ) -> Result<Predicate, ParseError> {
        let operator = self.next()?;

        let comparison = match operator.kind {
            TokenKind::Eq => Some(Comparison::Eq),
            TokenKind::Ne => Some(Comparison::Ne),
            TokenKind::Lt => Some(Comparison::Lt),
            TokenKind::Le => Some(Comparison::Le),
            TokenKind::Gt => Some(Comparison::Gt),
            TokenKind::Ge => Some(Comparison::Ge),
            _ => None,
        };
        if let Some(comparison) = comparison {
            let (value, _) = self.number_value(field)?;
            let test = NumberTest::Compare(comparison, value);
            return Ok(Predicate::Number { field, test });
        }

        if operator.is_word("between") {
            let (low, low_token) = self.number_value(field)?;
            let keyword = self.next()?;
            if !keyword.is_word("and") {
                let expected = format!("`AND` after `BETWEEN {}`", low_token.text);
                return Err(unexpected(&keyword, &expected));
            }
            let (high, high_token) = self.number_value(field)?;
            if low > high {
                let error = RuleError::RangeOrder {
                    low: low_token.text.to_owned(),
                    high: high_token.text.to_owned(),
                };
                return Err(high_token.position.error(error.to_string()));
            }
            let test = NumberTest::Between(low, high);
            return Ok(Predicate::Number { field, test });
        }

        let name = number_field_name(field);
        match presence {
            Some(presence) if operator.is_word("is") => self.presence(presence),
            Some(_) => Err(unexpected(
                &operator,
                &format!("a comparison, `BETWEEN` or `IS` after `{name}`"),
            )),
            None => Err(unexpected(
                &operator,
                &format!("a comparison or `BETWEEN` after `{name}`"),
            )),
        }
    }

    /// `[NOT] SET`, after `IS`.
    fn presence(&mut self, field: PresenceField) -> Result<Predicate, ParseError> {
        let is_set = !self.next_if_word("not")?;
        let keyword = self.next()?;
        if !keyword.is_word("set") {
            let expected = if is_set {
                "`SET` or `NOT SET` after `IS`"
            } else {
                "`SET`"
            };
            return Err(unexpected(&keyword, expected));
        }
        Ok(Predicate::Presence { field, is_set })
    }

    /// A number operand: cents for amounts, a whole count for `order_count`.
    fn number_value(&mut self, field: NumberField) -> Result<(u64, Token<'a>), ParseError> {
        let token = self.next()?;
        if token.kind != TokenKind::Literal {
            return Err(unexpected(&token, "a number"));
        }

        let value = match field {
            NumberField::OrderCount => parse_count(token.text),
            _ => parse_cents(token.text),
        };
        let message = match value {
            Ok(value) => return Ok((value, token)),
            Err(NumberProblem::NotANumber) => {
                return Err(unexpected(&token, "a number"));
            }
            Err(NumberProblem::TooManyDigits) => format!(
                "number `{}` has more than {MAX_NUMBER_DIGITS} digits before the point",
                token.text
            ),
            Err(NumberProblem::TooManyDecimals) => {
                format!("number `{}` has more than two decimals", token.text)
            }
            Err(NumberProblem::NotWhole) => {
                format!("`order_count` takes a whole number, found `{}`", token.text)
            }
        };
        Err(token.position.error(message))
    }

    /// An optional window after an event or `created`.
    fn window(&mut self) -> Result<Option<Window>, ParseError> {
        let keyword = self.peek()?;
        let window = if keyword.is_word("within") {
            self.next()?;
            let token = self.next()?;
            let duration = match token.kind {
                TokenKind::Literal => parse_duration(token.text),
                _ => None,
            };
            match duration {
                Some(duration) if duration.amount > 0 => Window::Within(duration),
                Some(_) => {
                    let message =
                        format!("a duration must be more than zero, found `{}`", token.text);
                    return Err(token.position.error(message));
                }
                None => return Err(unexpected(&token, "a duration like `30d`, `12h` or `2w`")),
            }
        } else if keyword.is_word("between") {
            self.next()?;
            let (from, from_token) = self.date()?;
            let keyword = self.next()?;
            if !keyword.is_word("and") {
                let expected = format!("`AND` after `BETWEEN {}`", from_token.text);
                return Err(unexpected(&keyword, &expected));
            }
            let (to, to_token) = self.date()?;
            if from > to {
                let error = RuleError::WindowOrder { from, to };
                return Err(to_token.position.error(error.to_string()));
            }
            Window::Between(from, to)
        } else if keyword.is_word("since") {
            self.next()?;
            Window::Since(self.date()?.0)
        } else if keyword.is_word("before") {
            self.next()?;
            Window::Before(self.date()?.0)
        } else {
            return Ok(None);
        };
        Ok(Some(window))
    }

    /// A `YYYY-MM-DD` date that exists.
    fn date(&mut self) -> Result<(chrono::NaiveDate, Token<'a>), ParseError> {
        let token = self.next()?;
        if token.kind != TokenKind::Literal || !looks_like_date(token.text) {
            return Err(unexpected(&token, "a date like `2026-03-01`"));
        }
        match parse_date(token.text) {
            Some(date) => Ok((date, token)),
            None => {
                let message = format!("date `{}` does not exist", token.text);
                Err(token.position.error(message))
            }
        }
    }

    /// A string, normalised by `normalise`; its errors point at the string.
    fn string_value(
        &mut self,
        normalise: impl Fn(String) -> Result<String, RuleError>,
    ) -> Result<String, ParseError> {
        let token = self.next()?;
        let TokenKind::Str(value) = token.kind else {
            return Err(unexpected(&token, "a string"));
        };
        normalise(value).map_err(|error| token.position.error(error.to_string()))
    }

    /// `( "a" , "b" ... )` after `IN`: normalised, repeats dropped, size capped.
    fn list(
        &mut self,
        qualifier: &'static str,
        normalise: impl Fn(String) -> Result<String, RuleError>,
    ) -> Result<Vec<String>, ParseError> {
        self.expect(TokenKind::OpenParen, "`(` after `IN`")?;
        let mut values = Vec::new();
        let mut seen = HashSet::new();

        loop {
            let position = self.peek()?.position;
            let value = self.string_value(&normalise)?;
            if seen.insert(value.clone()) {
                values.push(value);
                if values.len() > MAX_IN_VALUES {
                    let error = RuleError::TooManyValues { qualifier };
                    return Err(position.error(error.to_string()));
                }
            }

            let separator = self.next()?;
            match separator.kind {
                TokenKind::Comma => {}
                TokenKind::CloseParen => return Ok(values),
                _ => return Err(unexpected(&separator, "`,` or `)`")),
            }
        }
    }
}

impl Group {
    fn new(is_or: bool, start: Position) -> Self {
        Group {
            is_or,
            children: Vec::new(),
            start,
            child_height: 0,
        }
    }

    /// Takes over the children of a same-operator group written in parentheses.
    fn merge(&mut self, height: usize, children: Vec<Rule>) {
        self.child_height = self.child_height.max(height.saturating_sub(1));
        self.children.extend(children);
    }

    /// The finished group, not yet counted as a node.
    fn close(self) -> Result<Parsed, ParseError> {
        let height = self.child_height + 1;
        if height > MAX_RULE_DEPTH {
            return Err(self.start.error(RuleError::TooDeep.to_string()));
        }
        let rule = if self.is_or {
            Rule::Or(self.children)
        } else {
            Rule::And(self.children)
        };
        Ok(Parsed {
            rule,
            start: self.start,
            height,
            counted: false,
        })
    }
}

/// "expected EXPECTED, found TOKEN" at the token.
fn unexpected(token: &Token<'_>, expected: &str) -> ParseError {
    let message = format!("expected {expected}, found {}", token.describe());
    token.position.error(message)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::super::ast::{Duration, DurationUnit};
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("a real date")
    }

    fn within(amount: u32, unit: DurationUnit) -> Option<Window> {
        Some(Window::Within(Duration { amount, unit }))
    }

    fn opted_in() -> Rule {
        Rule::Predicate(Predicate::OptedIn)
    }

    fn event(kind: EventKind, window: Option<Window>) -> Rule {
        Rule::Predicate(Predicate::Event {
            kind,
            broadcast: None,
            window,
        })
    }

    fn set(field: SetField, values: &[&str]) -> Rule {
        let values = values.iter().map(|value| value.to_string()).collect();
        Rule::Predicate(Predicate::Set { field, values })
    }

    fn compare(field: NumberField, comparison: Comparison, value: u64) -> Rule {
        let test = NumberTest::Compare(comparison, value);
        Rule::Predicate(Predicate::Number { field, test })
    }

    fn between(field: NumberField, low: u64, high: u64) -> Rule {
        let test = NumberTest::Between(low, high);
        Rule::Predicate(Predicate::Number { field, test })
    }

    fn presence(field: PresenceField, is_set: bool) -> Rule {
        Rule::Predicate(Predicate::Presence { field, is_set })
    }

    fn segment(id: &str) -> Rule {
        Rule::Predicate(Predicate::Segment(id.to_owned()))
    }

    fn not(rule: Rule) -> Rule {
        Rule::Not(Box::new(rule))
    }

    fn messaged() -> Rule {
        event(EventKind::Messaged, None)
    }

    fn ordered() -> Rule {
        event(EventKind::Ordered, None)
    }

    fn error(text: &str) -> (usize, usize, String) {
        let error = parse(text).expect_err("the text is refused");
        (error.line, error.column, error.message)
    }

    fn at(line: usize, column: usize, message: &str) -> (usize, usize, String) {
        (line, column, message.to_owned())
    }

    #[test]
    fn opted_in_parses() {
        assert_eq!(parse("opted_in"), Ok(opted_in()));
    }

    #[test]
    fn events_parse_with_and_without_windows() {
        assert_eq!(parse("ordered"), Ok(ordered()));
        assert_eq!(
            parse("messaged WITHIN 7d"),
            Ok(event(EventKind::Messaged, within(7, DurationUnit::Days)))
        );
        assert_eq!(
            parse("abandoned_cart WITHIN 24h"),
            Ok(event(
                EventKind::AbandonedCart,
                within(24, DurationUnit::Hours)
            ))
        );
        assert_eq!(
            parse("clicked WITHIN 2w"),
            Ok(event(EventKind::Clicked, within(2, DurationUnit::Weeks)))
        );
        assert_eq!(
            parse("ordered SINCE 2026-03-01"),
            Ok(event(
                EventKind::Ordered,
                Some(Window::Since(date(2026, 3, 1)))
            ))
        );
        assert_eq!(
            parse("ordered BEFORE 2026-03-01"),
            Ok(event(
                EventKind::Ordered,
                Some(Window::Before(date(2026, 3, 1)))
            ))
        );
        assert_eq!(
            parse("ordered BETWEEN 2026-03-01 AND 2026-03-31"),
            Ok(event(
                EventKind::Ordered,
                Some(Window::Between(date(2026, 3, 1), date(2026, 3, 31)))
            ))
        );
        assert_eq!(
            parse("ordered BETWEEN 2026-03-01 AND 2026-03-01"),
            Ok(event(
                EventKind::Ordered,
                Some(Window::Between(date(2026, 3, 1), date(2026, 3, 1)))
            ))
        );
    }

    #[test]
    fn clicked_one_broadcast_keeps_the_broadcast_id() {
        let expected = Rule::Predicate(Predicate::Event {
            kind: EventKind::Clicked,
            broadcast: Some("Spring-Sale".to_owned()),
            window: within(12, DurationUnit::Hours),
        });
        assert_eq!(
            parse(r#"clicked broadcast "Spring-Sale" WITHIN 12h"#),
            Ok(expected)
        );
        let unwindowed = Rule::Predicate(Predicate::Event {
            kind: EventKind::Clicked,
            broadcast: Some("b1".to_owned()),
            window: None,
        });
        assert_eq!(parse(r#"CLICKED Broadcast "b1""#), Ok(unwindowed));
    }

    #[test]
    fn answered_takes_two_or_three_strings() {
        assert_eq!(
            parse(r#"answered("fit-quiz", "size", "Medium")"#),
            Ok(Rule::Predicate(Predicate::Answered {
                experience: "fit-quiz".to_owned(),
                question: "size".to_owned(),
                answer: Some("Medium".to_owned()),
            }))
        );
        assert_eq!(
            parse(r#"answered ( "fit-quiz" ,"size" )"#),
            Ok(Rule::Predicate(Predicate::Answered {
                experience: "fit-quiz".to_owned(),
                question: "size".to_owned(),
                answer: None,
            }))
        );
    }

    #[test]
    fn tags_are_normalised_and_deduplicated() {
        assert_eq!(parse(r#"tag = " VIP ""#), Ok(set(SetField::Tag, &["vip"])));
        assert_eq!(
            parse(r#"tag IN ("b", "VIP ", "a", "vip", "B")"#),
            Ok(set(SetField::Tag, &["b", "vip", "a"]))
        );
    }

    #[test]
    fn states_become_codes() {
        assert_eq!(
            parse(r#"state = "California""#),
            Ok(set(SetField::State, &["CA"]))
        );
        assert_eq!(
            parse(r#"state IN ("CA", "New York", "ca", "pr")"#),
            Ok(set(SetField::State, &["CA", "NY", "PR"]))
        );
    }

    #[test]
    fn time_zones_take_their_iana_spelling() {
        assert_eq!(
            parse(r#"timezone IN ("america/chicago", "UTC", "America/Chicago")"#),
            Ok(set(SetField::Timezone, &["America/Chicago", "UTC"]))
        );
    }

    #[test]
    fn klaviyo_lists_and_customers_compare_exactly() {
        assert_eq!(
            parse(r#"klaviyo_list = "Xy12ab""#),
            Ok(set(SetField::KlaviyoList, &["Xy12ab"]))
        );
        assert_eq!(
            parse(r#"klaviyo_list IN ("Xy12ab", "xy12ab", "Xy12ab")"#),
            Ok(set(SetField::KlaviyoList, &["Xy12ab", "xy12ab"]))
        );
        assert_eq!(
            parse(r#"customer IN ("c1", "C1", "c1", "c2")"#),
            Ok(Rule::Predicate(Predicate::Customers(vec![
                "c1".to_owned(),
                "C1".to_owned(),
                "c2".to_owned()
            ])))
        );
    }

    #[test]
    fn one_value_in_list_is_the_same_tree_as_equals() {
        assert_eq!(parse(r#"tag IN ("vip")"#), parse(r#"tag = "vip""#));
        assert_eq!(parse(r#"tag IN ("vip")"#), Ok(set(SetField::Tag, &["vip"])));
    }

    #[test]
    fn segment_parses() {
        assert_eq!(
            parse(r#"segment = "recent-buyers""#),
            Ok(segment("recent-buyers"))
        );
    }

    #[test]
    fn every_comparison_parses_in_cents() {
        let cases = [
            ("spent = 100", Comparison::Eq, 10_000),
            ("spent != 49.99", Comparison::Ne, 4_999),
            ("spent < 0.5", Comparison::Lt, 50),
            ("spent <= 0.05", Comparison::Le, 5),
            ("spent > 20", Comparison::Gt, 2_000),
            (
                "spent >= 999999999999.99",
                Comparison::Ge,
                99_999_999_999_999,
            ),
        ];
        for (text, comparison, cents) in cases {
            assert_eq!(
                parse(text),
                Ok(compare(NumberField::Spent, comparison, cents)),
                "{text}"
            );
        }
    }

    #[test]
    fn numeric_fields_take_comparisons_and_between() {
        assert_eq!(
            parse("lifetime_spend BETWEEN 50 AND 250"),
            Ok(between(NumberField::LifetimeSpend, 5_000, 25_000))
        );
        assert_eq!(
            parse("abandoned_cart_value>20"),
            Ok(compare(
                NumberField::AbandonedCartValue,
                Comparison::Gt,
                2_000
            ))
        );
        assert_eq!(
            parse("order_count >= 2"),
            Ok(compare(NumberField::OrderCount, Comparison::Ge, 2))
        );
        assert_eq!(
            parse("order_count BETWEEN 3 AND 3"),
            Ok(between(NumberField::OrderCount, 3, 3))
        );
    }

    #[test]
    fn created_takes_every_window() {
        assert_eq!(
            parse("created WITHIN 30d"),
            Ok(Rule::Predicate(Predicate::Created(Window::Within(
                Duration {
                    amount: 30,
                    unit: DurationUnit::Days
                }
            ))))
        );
        assert_eq!(
            parse("created BETWEEN 2026-01-01 AND 2026-01-31"),
            Ok(Rule::Predicate(Predicate::Created(Window::Between(
                date(2026, 1, 1),
                date(2026, 1, 31)
            ))))
        );
    }

    #[test]
    fn known_fields_take_is_set_and_is_not_set() {
        let fields = [
            ("tag", PresenceField::Tag),
            ("state", PresenceField::State),
            ("timezone", PresenceField::Timezone),
            ("klaviyo_list", PresenceField::KlaviyoList),
            ("lifetime_spend", PresenceField::LifetimeSpend),
            ("abandoned_cart_value", PresenceField::AbandonedCartValue),
        ];
        for (name, field) in fields {
            assert_eq!(parse(&format!("{name} IS SET")), Ok(presence(field, true)));
            assert_eq!(
                parse(&format!("{name} is not set")),
                Ok(presence(field, false))
            );
        }
    }

    #[test]
    fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
        assert_eq!(
            parse("opted_in OR ordered AND NOT messaged"),
            Ok(Rule::Or(vec![
                opted_in(),
                Rule::And(vec![ordered(), not(messaged())])
            ]))
        );
        assert_eq!(
            parse("NOT opted_in AND ordered"),
            Ok(Rule::And(vec![not(opted_in()), ordered()]))
        );
        assert_eq!(
            parse("opted_in AND ordered OR messaged"),
            Ok(Rule::Or(vec![
                Rule::And(vec![opted_in(), ordered()]),
                messaged()
            ]))
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(
            parse("NOT (opted_in OR ordered)"),
            Ok(not(Rule::Or(vec![opted_in(), ordered()])))
        );
        assert_eq!(
            parse("(opted_in OR ordered) AND messaged"),
            Ok(Rule::And(vec![
                Rule::Or(vec![opted_in(), ordered()]),
                messaged()
            ]))
        );
        assert_eq!(parse("((opted_in))"), Ok(opted_in()));
        assert_eq!(parse("NOT NOT opted_in"), Ok(not(not(opted_in()))));
    }

    #[test]
    fn chains_are_flattened_into_one_group() {
        assert_eq!(
            parse("opted_in AND (ordered AND messaged) AND segment = \"s\""),
            Ok(Rule::And(vec![
                opted_in(),
                ordered(),
                messaged(),
                segment("s")
            ]))
        );
        assert_eq!(
            parse("(opted_in OR ordered) OR (messaged OR (segment = \"s\"))"),
            Ok(Rule::Or(vec![
                opted_in(),
                ordered(),
                messaged(),
                segment("s")
            ]))
        );
        assert_eq!(
            parse("opted_in AND (ordered OR (messaged OR segment = \"s\"))"),
            Ok(Rule::And(vec![
                opted_in(),
                Rule::Or(vec![ordered(), messaged(), segment("s")])
            ]))
        );
    }

    #[test]
    fn the_and_after_between_belongs_to_between() {
        assert_eq!(
            parse("spent BETWEEN 1 AND 2 AND opted_in"),
            Ok(Rule::And(vec![
                between(NumberField::Spent, 100, 200),
                opted_in()
            ]))
        );
        assert_eq!(
            parse("ordered BETWEEN 2026-01-01 AND 2026-01-31 AND opted_in OR messaged"),
            Ok(Rule::Or(vec![
                Rule::And(vec![
                    event(
                        EventKind::Ordered,
                        Some(Window::Between(date(2026, 1, 1), date(2026, 1, 31)))
                    ),
                    opted_in()
                ]),
                messaged()
            ]))
        );
    }

    #[test]
    fn keywords_names_and_units_ignore_case() {
        assert_eq!(
            parse(
                "Opted_In and NOT Messaged within 7D or TAG in (\"x\") AND Spent between 1 and 2"
            ),
            Ok(Rule::Or(vec![
                Rule::And(vec![
                    opted_in(),
                    not(event(EventKind::Messaged, within(7, DurationUnit::Days)))
                ]),
                Rule::And(vec![
                    set(SetField::Tag, &["x"]),
                    between(NumberField::Spent, 100, 200)
                ])
            ]))
        );
    }

    #[test]
    fn white_space_and_new_lines_between_tokens_are_free() {
        assert_eq!(
            parse("\n\t opted_in\r\n  AND\n\nspent>=1\n"),
            Ok(Rule::And(vec![
                opted_in(),
                compare(NumberField::Spent, Comparison::Ge, 100)
            ]))
        );
    }

    #[test]
    fn string_escapes_are_read() {
        assert_eq!(
            parse(r#"segment = "say \"hi\" \\ bye""#),
            Ok(segment(r#"say "hi" \ bye"#))
        );
    }

    #[test]
    fn the_examples_of_rules_md_parse() {
        let examples = [
            (
                "opted_in AND NOT messaged WITHIN 7d",
                Rule::And(vec![
                    opted_in(),
                    not(event(EventKind::Messaged, within(7, DurationUnit::Days))),
                ]),
            ),
            (
                r#"tag = "vip" OR state IN ("CA", "New York")"#,
                Rule::Or(vec![
                    set(SetField::Tag, &["vip"]),
                    set(SetField::State, &["CA", "NY"]),
                ]),
            ),
            (
                "ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 100",
                Rule::And(vec![
                    event(
                        EventKind::Ordered,
                        Some(Window::Between(date(1998, 1, 1), date(1998, 6, 30))),
                    ),
                    compare(NumberField::Spent, Comparison::Ge, 10_000),
                ]),
            ),
            (
                "abandoned_cart WITHIN 24h AND abandoned_cart_value > 20 AND opted_in",
                Rule::And(vec![
                    event(EventKind::AbandonedCart, within(24, DurationUnit::Hours)),
                    compare(NumberField::AbandonedCartValue, Comparison::Gt, 2_000),
                    opted_in(),
                ]),
            ),
            (
                r#"answered("fit-quiz", "size", "Medium") AND NOT ordered WITHIN 30d"#,
                Rule::And(vec![
                    Rule::Predicate(Predicate::Answered {
                        experience: "fit-quiz".to_owned(),
                        question: "size".to_owned(),
                        answer: Some("Medium".to_owned()),
                    }),
                    not(event(EventKind::Ordered, within(30, DurationUnit::Days))),
                ]),
            ),
            (
                r#"klaviyo_list = "Xy12ab" AND NOT segment = "recent-buyers""#,
                Rule::And(vec![
                    set(SetField::KlaviyoList, &["Xy12ab"]),
                    not(segment("recent-buyers")),
                ]),
            ),
            (
                r#"created SINCE 2026-01-01 AND timezone = "America/Chicago""#,
                Rule::And(vec![
                    Rule::Predicate(Predicate::Created(Window::Since(date(2026, 1, 1)))),
                    set(SetField::Timezone, &["America/Chicago"]),
                ]),
            ),
            (
                "lifetime_spend BETWEEN 50 AND 250 AND order_count >= 2",
                Rule::And(vec![
                    between(NumberField::LifetimeSpend, 5_000, 25_000),
                    compare(NumberField::OrderCount, Comparison::Ge, 2),
                ]),
            ),
        ];
        for (text, expected) in examples {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn errors_display_their_position_first() {
        let error = parse("opted_in AND fo").expect_err("refused");
        assert_eq!(
            error.to_string(),
            "line 1, column 14: expected a qualifier, found `fo`"
        );
    }

    #[test]
    fn grammar_errors_say_what_was_expected_and_where() {
        let cases = [
            ("fo", at(1, 1, "expected a qualifier, found `fo`")),
            ("", at(1, 1, "expected a qualifier, found end of text")),
            (
                "  \n  ",
                at(2, 3, "expected a qualifier, found end of text"),
            ),
            ("@", at(1, 1, "expected a qualifier, found `@`")),
            (
                "opted_in AND",
                at(1, 13, "expected a qualifier, found end of text"),
            ),
            (
                "opted_in)",
                at(1, 9, "expected `AND`, `OR` or end of text, found `)`"),
            ),
            (
                "opted_in WITHIN 7d",
                at(1, 10, "expected `AND`, `OR` or end of text, found `WITHIN`"),
            ),
            (
                "(opted_in\nOR ordered",
                at(2, 11, "expected `AND`, `OR` or `)`, found end of text"),
            ),
            (
                "tag != \"x\"",
                at(1, 5, "expected `=`, `IN` or `IS` after `tag`, found `!=`"),
            ),
            ("tag = vip", at(1, 7, "expected a string, found `vip`")),
            ("tag IN ()", at(1, 9, "expected a string, found `)`")),
            ("tag IN (\"a\",)", at(1, 13, "expected a string, found `)`")),
            (
                "tag IN (\"a\" \"b\")",
                at(1, 13, "expected `,` or `)`, found `\"b\"`"),
            ),
            (
                "tag IN \"a\"",
                at(1, 8, "expected `(` after `IN`, found `\"a\"`"),
            ),
            (
                "tag IS MAYBE",
                at(
                    1,
                    8,
                    "expected `SET` or `NOT SET` after `IS`, found `MAYBE`",
                ),
            ),
            ("tag IS NOT", at(1, 11, "expected `SET`, found end of text")),
            (
                "spent IS SET",
                at(
                    1,
                    7,
                    "expected a comparison or `BETWEEN` after `spent`, found `IS`",
                ),
            ),
            (
                "lifetime_spend IN (\"1\")",
                at(
                    1,
                    16,
                    "expected a comparison, `BETWEEN` or `IS` after `lifetime_spend`, found `IN`",
                ),
            ),
            ("spent > abc", at(1, 9, "expected a number, found `abc`")),
            ("spent > 1e3", at(1, 9, "expected a number, found `1e3`")),
            (
                "spent BETWEEN 1 OR 2",
                at(1, 17, "expected `AND` after `BETWEEN 1`, found `OR`"),
            ),
            (
                "created",
                at(
                    1,
                    8,
                    "expected a window (`WITHIN`, `BETWEEN`, `SINCE` or `BEFORE`) after `created`, \
                     found end of text",
                ),
            ),
            (
                "ordered WITHIN 30 d",
                at(
                    1,
                    16,
                    "expected a duration like `30d`, `12h` or `2w`, found `30`",
                ),
            ),
            (
                "ordered WITHIN 30m",
                at(
                    1,
                    16,
                    "expected a duration like `30d`, `12h` or `2w`, found `30m`",
                ),
            ),
            (
                "ordered SINCE 2026-3-1",
                at(1, 15, "expected a date like `2026-03-01`, found `2026-3-1`"),
            ),
            (
                "ordered BETWEEN 2026-01-01 2026-02-01",
                at(
                    1,
                    28,
                    "expected `AND` after `BETWEEN 2026-01-01`, found `2026-02-01`",
                ),
            ),
            (
                "customer = \"c1\"",
                at(1, 10, "expected `IN` after `customer`, found `=`"),
            ),
            (
                "segment IN (\"s\")",
                at(1, 9, "expected `=` after `segment`, found `IN`"),
            ),
            (
                "answered \"e\"",
                at(1, 10, "expected `(` after `answered`, found `\"e\"`"),
            ),
            (
                "answered(\"e\" \"q\")",
                at(1, 14, "expected `,`, found `\"q\"`"),
            ),
            (
                "answered(\"e\", \"q\"",
                at(1, 18, "expected `,` or `)`, found end of text"),
            ),
            (
                "answered(\"e\", \"q\", \"a\", \"b\")",
                at(1, 23, "expected `)`, found `,`"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text}");
        }
    }

    #[test]
    fn value_errors_point_at_the_string() {
        let cases = [
            (
                "opted_in AND\n  state = \"Calfornia\"",
                at(2, 11, "unknown state `Calfornia`"),
            ),
            (
                "state IN (\"CA\",\n\t\"ZZ\")",
                at(2, 2, "unknown state `ZZ`"),
            ),
            (
                "timezone = \"Mars/Base\"",
                at(1, 12, "unknown time zone `Mars/Base`"),
            ),
            ("tag = \"  \"", at(1, 7, "empty tag")),
            ("segment = \"\"", at(1, 11, "empty segment id")),
            ("customer IN (\"a\", \"\")", at(1, 19, "empty customer id")),
            ("clicked broadcast \"\"", at(1, 19, "empty broadcast id")),
            ("answered(\"\", \"q\")", at(1, 10, "empty experience id")),
            ("answered(\"e\", \"\")", at(1, 15, "empty question id")),
            ("klaviyo_list = \"\"", at(1, 16, "empty klaviyo list id")),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text}");
        }
    }

    #[test]
    fn empty_answers_are_allowed() {
        assert_eq!(
            parse(r#"answered("e", "q", "")"#),
            Ok(Rule::Predicate(Predicate::Answered {
                experience: "e".to_owned(),
                question: "q".to_owned(),
                answer: Some(String::new()),
            }))
        );
    }

    #[test]
    fn number_errors_name_the_number() {
        let cases = [
            (
                "spent > 1234567890123",
                at(
                    1,
                    9,
                    "number `1234567890123` has more than 12 digits before the point",
                ),
            ),
            (
                "spent > 1.234",
                at(1, 9, "number `1.234` has more than two decimals"),
            ),
            (
                "order_count = 2.5",
                at(1, 15, "`order_count` takes a whole number, found `2.5`"),
            ),
            (
                "order_count = 2.0",
                at(1, 15, "`order_count` takes a whole number, found `2.0`"),
            ),
            (
                "spent BETWEEN 300\nAND 100",
                at(
                    2,
                    5,
                    "`BETWEEN 300 AND 100` has its low end above its high end",
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text}");
        }
    }

    #[test]
    fn window_errors_point_at_the_bad_date_or_duration() {
        let cases = [
            (
                "ordered SINCE 2026-02-30",
                at(1, 15, "date `2026-02-30` does not exist"),
            ),
            (
                "ordered BEFORE 2025-02-29",
                at(1, 16, "date `2025-02-29` does not exist"),
            ),
            (
                "ordered BETWEEN 2026-03-31\n  AND 2026-03-01",
                at(
                    2,
                    7,
                    "window starts on `2026-03-31`, after it ends on `2026-03-01`",
                ),
            ),
            (
                "messaged WITHIN 0d",
                at(1, 17, "a duration must be more than zero, found `0d`"),
            ),
            (
                "messaged WITHIN 99999999999d",
                at(
                    1,
                    17,
                    "expected a duration like `30d`, `12h` or `2w`, found `99999999999d`",
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text}");
        }
    }

    #[test]
    fn string_errors_point_at_the_opening_quote() {
        let cases = [
            ("tag = \"vip", at(1, 7, "unterminated string")),
            (
                "opted_in AND\ntag = \"v\nip\"",
                at(2, 7, "line break in string"),
            ),
            (
                "tag = \"v\\tip\"",
                at(
                    1,
                    7,
                    "unknown escape `\\t` in string (only `\\\"` and `\\\\`)",
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text}");
        }
    }

    #[test]
    fn the_first_bad_token_wins_over_later_spelling_errors() {
        assert_eq!(
            error("fo \"unterminated"),
            at(1, 1, "expected a qualifier, found `fo`")
        );
    }

    #[test]
    fn the_deepest_accepted_rule_has_thirty_two_levels() {
        let text = format!("{}opted_in", "NOT ".repeat(31));
        let mut expected = opted_in();
        for _ in 0..31 {
            expected = not(expected);
        }
        assert_eq!(parse(&text), Ok(expected));
    }

    #[test]
    fn a_rule_thirty_three_levels_deep_is_refused_at_its_top() {
        let text = format!("{}opted_in", "NOT ".repeat(32));
        assert_eq!(
            error(&text),
            at(1, 1, "rule is nested deeper than 32 levels")
        );
    }

    #[test]
    fn groups_count_towards_depth() {
        // 15 parenthesised `a AND (b OR (...))` levels: two tree levels each,
        // plus the innermost qualifier, makes 31. An `AND` around it merges
        // with its top `AND`, so stays at 31; `OR NOT` adds two levels.
        let mut text = "opted_in".to_owned();
        for _ in 0..15 {
            text = format!("ordered AND (messaged OR ({text}))");
        }
        assert!(parse(&text).is_ok());
        assert!(parse(&format!("ordered OR messaged AND ({text})")).is_ok());
        let deeper = format!("ordered OR NOT ({text})");
        assert_eq!(
            error(&deeper),
            at(1, 1, "rule is nested deeper than 32 levels")
        );
    }

    #[test]
    fn deep_parentheses_are_refused_without_recursing() {
        let text = "(".repeat(60_000);
        assert_eq!(
            error(&text),
            at(1, 33, "rule is nested deeper than 32 levels")
        );
    }

    #[test]
    fn long_not_chains_are_refused_without_recursing() {
        let text = format!("{}opted_in", "NOT ".repeat(16_000));
        assert_eq!(
            error(&text),
            at(1, 129, "rule is nested deeper than 32 levels")
        );
        let text = format!("{}opted_in", "not\n".repeat(16_000));
        assert_eq!(
            error(&text),
            at(33, 1, "rule is nested deeper than 32 levels")
        );
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_with_an_error() {
        let text = format!("{}opted_in{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(
            error(&text),
            at(1, 65_537, "rule text is longer than 65536 bytes")
        );
        let text = "NOT ".repeat(100_000);
        assert_eq!(
            error(&text),
            at(1, 65_537, "rule text is longer than 65536 bytes")
        );
    }

    #[test]
    fn text_of_exactly_the_limit_is_accepted() {
        let text = format!("opted_in{}", " ".repeat(MAX_RULE_TEXT_BYTES - 8));
        assert_eq!(text.len(), 65_536);
        assert_eq!(parse(&text), Ok(opted_in()));
    }

    #[test]
    fn text_over_the_limit_is_refused_where_it_crosses_it() {
        let text = format!("opted_in\n{}x", " ".repeat(MAX_RULE_TEXT_BYTES - 9));
        assert_eq!(text.len(), 65_537);
        assert_eq!(
            error(&text),
            at(2, 65_528, "rule text is longer than 65536 bytes")
        );
    }

    #[test]
    fn a_thousand_nodes_are_accepted() {
        // 999 qualifiers under one OR: 1,000 nodes.
        let text = vec!["opted_in"; 999].join(" OR ");
        let Ok(Rule::Or(children)) = parse(&text) else {
            panic!("expected an OR group");
        };
        assert_eq!(children.len(), 999);
    }

    #[test]
    fn the_node_past_the_limit_is_refused() {
        // 1,000 qualifiers and their OR make 1,001 nodes; the OR is the last counted.
        let text = vec!["opted_in"; 1_000].join(" OR ");
        assert_eq!(
            error(&text),
            at(1, 1, "rule has more than 1000 qualifiers and operators")
        );
        // The 1,001st qualifier starts after 1,000 copies of `opted_in OR `.
        let text = vec!["opted_in"; 1_001].join(" OR ");
        assert_eq!(
            error(&text),
            at(
                1,
                12_001,
                "rule has more than 1000 qualifiers and operators"
            )
        );
    }

    #[test]
    fn nots_count_as_nodes() {
        // 500 `NOT opted_in` make 1,000 nodes; the 501st NOT is the 1,001st
        // node, and starts after 500 copies of `NOT opted_in AND `.
        let text = vec!["NOT opted_in"; 501].join(" AND ");
        assert_eq!(
            error(&text),
            at(1, 8_501, "rule has more than 1000 qualifiers and operators")
        );
    }

    /// `count` distinct ids of one to three letters or digits, each quoted.
    fn distinct_ids(count: usize) -> Vec<String> {
        let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
        let mut ids: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        for a in &alphabet {
            for b in &alphabet {
                ids.push(format!("{a}{b}"));
                for c in &alphabet {
                    ids.push(format!("{a}{b}{c}"));
                }
            }
        }
        ids.sort_by_key(String::len);
        ids.truncate(count);
        ids.iter().map(|id| format!("\"{id}\"")).collect()
    }

    #[test]
    fn in_lists_hold_up_to_ten_thousand_values() {
        let ids = distinct_ids(10_000);
        let text = format!("customer IN ({})", ids.join(","));
        let Ok(Rule::Predicate(Predicate::Customers(parsed))) = parse(&text) else {
            panic!("expected a customer list");
        };
        assert_eq!(parsed.len(), 10_000);
        assert_eq!(parsed.first().map(String::as_str), Some("a"));
    }

    #[test]
    fn the_value_past_ten_thousand_is_refused() {
        let ids = distinct_ids(10_001);
        let before_last = format!("customer IN ({},", ids[..10_000].join(","));
        let text = format!("{before_last}{})", ids[10_000]);
        assert_eq!(
            error(&text),
            at(
                1,
                before_last.len() + 1,
                "`customer IN` list has more than 10000 values"
            )
        );
    }

    #[test]
    fn repeats_do_not_count_towards_the_list_limit() {
        let ids = distinct_ids(2);
        let text = format!("customer IN ({})", vec![ids.join(","); 6_000].join(","));
        assert_eq!(
            parse(&text),
            Ok(Rule::Predicate(Predicate::Customers(vec![
                "a".to_owned(),
                "b".to_owned()
            ])))
        );
    }
}
