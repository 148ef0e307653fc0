//! The engine's inputs: customers, events and segments as the engine takes
//! them, already validated and normalised by the service layer.

use crate::rule::Rule;
use crate::time::Seconds;

/// A change to one customer; `None` leaves an attribute as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerUpdate {
    pub customer_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// `Some(None)` clears the state.
    pub state: Option<Option<String>>,
    /// `Some(None)` clears the time zone.
    pub time_zone: Option<Option<String>>,
    /// `Some` replaces the tags.
    pub tags: Option<Vec<String>>,
    /// `Some` replaces the Klaviyo lists.
    pub klaviyo_lists: Option<Vec<String>>,
    /// Lists to join, after `klaviyo_lists`.
    pub add_klaviyo_lists: Vec<String>,
    /// Lists to leave, last.
    pub remove_klaviyo_lists: Vec<String>,
    pub lifetime_spend_cents: Option<u64>,
    pub opted_in: Option<bool>,
    pub create_time: Option<Seconds>,
}

/// One event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: String,
    pub customer_id: String,
    pub time: Seconds,
    pub data: EventData,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    Order {
        value_cents: u64,
    },
    Message,
    Click {
        broadcast_id: String,
    },
    AbandonedCart {
        value_cents: u64,
    },
    Answer {
        experience_id: String,
        question_id: String,
        answer: String,
    },
    OptIn,
    OptOut,
}

/// Whose members to count or list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Rule(Rule),
    Segment(String),
    Snapshot(String),
}

/// A new saved segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInput {
    pub title: String,
    pub rule: Option<Rule>,
    pub included_customer_ids: Vec<String>,
    pub excluded_customer_ids: Vec<String>,
}

/// What a write batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub created: u32,
    pub updated: u32,
    pub recorded: u32,
    pub duplicates: u32,
    pub deleted: u32,
}

/// One page of an audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudiencePage {
    pub customer_ids: Vec<String>,
    pub total_count: u64,
    /// The dense id of the last customer returned, when more follow.
    pub resume_after: Option<u32>,
}

/// The count of one node of a rule, evaluated alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCount {
    /// Child positions from the root.
    pub path: Vec<usize>,
    /// The node's canonical text.
    pub rule_text: String,
    pub count: u64,
}

/// The size of an audience, of its sendable part, and of its rule's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudienceCounts {
    pub count: u64,
    pub sendable: u64,
    /// Empty unless asked for, and for an audience with no rule.
    pub nodes: Vec<NodeCount>,
}

/// The sizes of several audiences and of their intersections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlap {
    pub counts: Vec<u64>,
    /// (first, second, size of the intersection), first < second.
    pub pairs: Vec<(usize, usize, u64)>,
    pub intersection: u64,
    pub union: u64,
}

/// Who joins and who leaves going from one audience to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudienceDiff {
    pub before: u64,
    pub after: u64,
    pub joined: u64,
    pub left: u64,
    pub joined_sample: Vec<String>,
    pub left_sample: Vec<String>,
}

/// What decided whether a customer is a member of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Rule,
    Included,
    Excluded,
}

/// Why one customer is in or out of one audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Empty for an inline rule.
    pub segment_id: String,
    pub member: bool,
    pub decided_by: Decision,
    pub rule_holds: bool,
    pub clauses: Vec<Clause>,
}

/// One node of a rule, for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub path: Vec<usize>,
    pub rule_text: String,
    pub holds: bool,
    /// The fact behind a leaf's value; empty for AND, OR and NOT.
    pub fact: String,
}
