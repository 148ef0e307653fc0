//! The records stored beside the bitmaps: a tenant's settings, a customer's
//! attributes and running totals, and saved segments.
//!
//! Records are JSON so that a field added later reads as its default from
//! older data. The bitmaps are derived from these records and events; the
//! records are what a write reads to know a customer's old values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Seconds;

/// A tenant's settings and counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantMeta {
    /// IANA name of the time zone the tenant's calendar days follow.
    pub time_zone: String,
    /// The next dense id to hand out; ids are never reused.
    pub next_dense: u32,
    /// Earliest and latest event time per event kind code.
    #[serde(default)]
    pub event_bounds: BTreeMap<u8, (Seconds, Seconds)>,
    pub create_time: Seconds,
    /// The number of the last write batch. Time-index rows carry the number
    /// of the batch that wrote them, so that a read skips the rows of a batch
    /// that is on disk but not yet acknowledged.
    #[serde(default)]
    pub write_sequence: u64,
    /// Whether every customer's e-mail and phone have contact rows; false
    /// for data written before contacts were indexed, until backfilled.
    #[serde(default)]
    pub contacts_indexed: bool,
}

/// What segmentd knows of one customer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerRecord {
    /// The merchant's id.
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub klaviyo_lists: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_spend_cents: Option<u64>,
    /// Consent now, and the time of the change that set it (latest wins).
    #[serde(default)]
    pub opted_in: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_time: Option<Seconds>,
    /// The store's creation attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_event_time: Option<Seconds>,
    /// When segmentd first heard of the customer.
    pub first_seen_time: Seconds,
    #[serde(default)]
    pub order_count: u64,
    #[serde(default)]
    pub spent_cents: u64,
    /// The latest abandoned cart: (time, value in cents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_cart: Option<(Seconds, u64)>,
    /// The latest answer to each question the customer answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<AnswerRecord>,
}

/// A customer's latest answer to one question of one experience.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnswerRecord {
    pub experience: String,
    pub question: String,
    pub answer: String,
    pub time: Seconds,
}

impl CustomerRecord {
    /// A customer first heard of at `now`.
    pub fn new(customer_id: String, now: Seconds) -> Self {
        CustomerRecord {
            customer_id,
            first_seen_time: now,
            ..CustomerRecord::default()
        }
    }

    /// The creation time of RULES.md: the store's attribute, else the
    /// earliest event, else the first upsert.
    pub fn creation_time(&self) -> Seconds {
        self.create_time
            .or(self.first_event_time)
            .unwrap_or(self.first_seen_time)
    }
}

/// A saved segment as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRecord {
    pub segment_id: String,
    pub title: String,
    /// Canonical rule text; empty for a segment of include lists only.
    pub rule_text: String,
    #[serde(default)]
    pub included_customer_ids: Vec<String>,
    #[serde(default)]
    pub excluded_customer_ids: Vec<String>,
    pub version: u64,
    #[serde(default)]
    pub archived: bool,
    /// Microseconds since the epoch.
    pub create_time_micros: i64,
    pub update_time_micros: i64,
}

/// An audience frozen for later use; its members are stored beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    #[serde(default)]
    pub title: String,
    /// Canonical text of the rule frozen; empty when a segment was.
    #[serde(default)]
    pub rule_text: String,
    /// The segment frozen; empty when a rule was.
    #[serde(default)]
    pub segment_id: String,
    /// The evaluation instant.
    pub as_of: Seconds,
    /// Microseconds since the epoch.
    pub create_time_micros: i64,
    /// Members when taken.
    pub taken_count: u64,
}

/// An API key of a tenant. The secret itself is never stored, and its
/// hash is left out of `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant: String,
    #[serde(default)]
    pub label: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_time: Option<i64>,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("key_id", &self.key_id)
            .field("tenant", &self.tenant)
            .field("label", &self.label)
            .field("create_time", &self.create_time)
            .field("revoke_time", &self.revoke_time)
            .finish_non_exhaustive()
    }
}
