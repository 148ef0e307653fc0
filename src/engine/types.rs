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
