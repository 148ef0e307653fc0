//! The two ways a rule is refused: a text that does not parse, and a tree
//! that breaks a rule of RULES.md.
//!
//! Messages are short, lower-case and quote the bad value in backticks, so the
//! service can hand them to the caller as they are. A [`ParseError`] also
//! carries the 1-based line and column (counted in characters) of the first
//! bad token.

use chrono::NaiveDate;

use super::limits::{
    MAX_ID_BYTES, MAX_IN_VALUES, MAX_RULE_DEPTH, MAX_RULE_NODES, MAX_RULE_TEXT_BYTES,
};

/// A rule text that does not parse, or whose values or size are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line of the first bad token.
    pub line: usize,
    /// 1-based column of the first bad token, in characters.
    pub column: usize,
    /// What was expected and what was found there.
    pub message: String,
}

/// A rule tree that breaks the contract: a bad value, a malformed group or a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An `AND` or `OR` group without children.
    #[error("empty {operator} group")]
    EmptyGroup {
        /// `AND` or `OR`.
        operator: &'static str,
    },
    /// A set qualifier or `customer IN` without values.
    #[error("`{qualifier}` needs at least one value")]
    NoValues {
        /// The qualifier's name in the text form.
        qualifier: &'static str,
    },
    /// The tree is deeper than [`MAX_RULE_DEPTH`].
    #[error("rule is nested deeper than {MAX_RULE_DEPTH} levels")]
    TooDeep,
    /// The tree has more than [`MAX_RULE_NODES`] nodes.
    #[error("rule has more than {MAX_RULE_NODES} qualifiers and operators")]
    TooManyNodes,
    /// An `IN` list longer than [`MAX_IN_VALUES`].
    #[error("`{qualifier} IN` list has more than {MAX_IN_VALUES} values")]
    TooManyValues {
        /// The qualifier's name in the text form.
        qualifier: &'static str,
    },
    /// The text is longer than [`MAX_RULE_TEXT_BYTES`].
    #[error("rule text is longer than {MAX_RULE_TEXT_BYTES} bytes")]
    TextTooLong,
    /// A state that is neither a known code nor a known name.
    #[error("unknown state `{0}`")]
    UnknownState(String),
    /// A time zone that is not an IANA name.
    #[error("unknown time zone `{0}`")]
    UnknownTimeZone(String),
    /// A tag that is empty once trimmed.
    #[error("empty tag")]
    EmptyTag,
    /// An empty id (customer, broadcast, experience, question, list, segment).
    #[error("empty {what}")]
    EmptyId {
        /// What the id names, e.g. `customer id`.
        what: &'static str,
    },
    /// An id longer than [`MAX_ID_BYTES`], which no write accepts either.
    #[error("{what} is longer than {MAX_ID_BYTES} bytes")]
    IdTooLong {
        /// What the id names, e.g. `customer id`.
        what: &'static str,
    },
    /// An id with a control character, which no write accepts either.
    #[error("{what} holds a control character")]
    IdControlCharacter {
        /// What the id names, e.g. `customer id`.
        what: &'static str,
    },
    /// A value with a line break, which the text form cannot write.
    #[error("line break in {what}")]
    LineBreak {
        /// What the value is, e.g. `tag`.
        what: &'static str,
    },
    /// A broadcast given on an event other than `clicked`.
    #[error("only `clicked` takes a broadcast")]
    BroadcastNotClicked,
    /// `WITHIN 0d` and the like.
    #[error("a duration must be more than zero")]
    ZeroDuration,
    /// A date the text form cannot write.
    #[error("date `{0}` is outside the years 0000 to 9999")]
    DateOutOfRange(NaiveDate),
    /// A window `BETWEEN a AND b` with `a` after `b`.
    #[error("window starts on `{from}`, after it ends on `{to}`")]
    WindowOrder {
        /// The first date.
        from: NaiveDate,
        /// The second date.
        to: NaiveDate,
    },
    /// A numeric `BETWEEN low AND high` with `low > high`.
    #[error("`BETWEEN {low} AND {high}` has its low end above its high end")]
    RangeOrder {
        /// The first bound as written.
        low: String,
        /// The second bound as written.
        high: String,
    },
    /// An amount above [`super::limits::MAX_AMOUNT_CENTS`].
    #[error("amount of {cents} cents is more than 999999999999.99")]
    AmountTooLarge {
        /// The amount in cents.
        cents: u64,
    },
    /// An `order_count` operand above [`super::limits::MAX_ORDER_COUNT`].
    #[error("order count `{0}` has more than 12 digits")]
    CountTooLarge(u64),
}

impl ParseError {
    /// An error at `line`, `column` with `message`.
    pub(crate) fn new(line: usize, column: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            column,
            message: message.into(),
        }
    }
}
