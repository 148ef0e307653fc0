//! The rule tree: what a segment rule means, independent of how it was written.
//!
//! Both the text form (`parse`) and the structured protobuf form end up here.
//! Values in the tree are already normalised (tags trimmed and lower-case,
//! states as upper-case codes, time zones in IANA spelling, amounts in
//! cents), so two rules that mean the same render to the same canonical text.

use chrono::NaiveDate;

/// A segment rule: qualifiers joined by AND, OR and NOT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Every child holds; at least two children once normalised.
    And(Vec<Rule>),
    /// Any child holds; at least two children once normalised.
    Or(Vec<Rule>),
    /// The tenant's live customers minus the child's.
    Not(Box<Rule>),
    Predicate(Predicate),
}

/// One qualifier of RULES.md.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Predicate {
    /// `opted_in`
    OptedIn,
    /// `ordered`, `messaged`, `clicked`, `clicked broadcast "B"`, `abandoned_cart`.
    Event {
        kind: EventKind,
        /// Only with `EventKind::Clicked`.
        broadcast: Option<String>,
        window: Option<Window>,
    },
    /// `answered("EXP", "QUESTION")` or `answered("EXP", "QUESTION", "ANSWER")`.
    Answered {
        experience: String,
        question: String,
        answer: Option<String>,
    },
    /// `field = "v"` (one value) or `field IN ("a", "b")`; values normalised,
    /// in the given order, without repeats.
    Set {
        field: SetField,
        values: Vec<String>,
    },
    /// `field <cmp> N` or `field BETWEEN A AND B`; amounts in cents.
    Number {
        field: NumberField,
        test: NumberTest,
    },
    /// `created window`
    Created(Window),
    /// `customer IN ("C1", ...)`, without repeats.
    Customers(Vec<String>),
    /// `segment = "SEG"`
    Segment(String),
    /// `field IS SET` (`is_set`) or `field IS NOT SET`.
    Presence { field: PresenceField, is_set: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Ordered,
    Messaged,
    Clicked,
    AbandonedCart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetField {
    Tag,
    State,
    Timezone,
    KlaviyoList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberField {
    Spent,
    LifetimeSpend,
    AbandonedCartValue,
    OrderCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceField {
    Tag,
    State,
    Timezone,
    KlaviyoList,
    LifetimeSpend,
    AbandonedCartValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A test on a number: cents for amounts, a plain count for `order_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberTest {
    Compare(Comparison, u64),
    /// Inclusive at both ends; `low <= high`.
    Between(u64, u64),
}

/// A time window (RULES.md, Windows and Time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// `WITHIN 12h`, `WITHIN 30d`, `WITHIN 2w`; the unit is kept as given.
    Within(Duration),
    /// `BETWEEN a AND b`: local calendar days, both included; `a <= b`.
    Between(NaiveDate, NaiveDate),
    /// `SINCE d`: from the start of local day `d` up to the evaluation instant.
    Since(NaiveDate),
    /// `BEFORE d`: strictly before the start of local day `d`.
    Before(NaiveDate),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Duration {
    pub amount: u32,
    pub unit: DurationUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationUnit {
    Hours,
    Days,
    Weeks,
}
