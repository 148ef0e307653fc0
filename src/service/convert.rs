//! Checks and converts request messages into the engine's types, naming the
//! offending field in every error.

use std::collections::HashSet;

use prost_types::Timestamp;

use super::rules;
use crate::engine::types::{Audience, CustomerUpdate, EventData, NewEvent, SegmentInput};
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::event::Kind;
use crate::rule::{self, SetField};
use crate::store::records::SegmentRecord;
use crate::time::Seconds;

/// Longest tenant name, in bytes.
pub const MAX_TENANT_BYTES: usize = 64;
/// Longest id (customer, event, segment, broadcast, list), in bytes.
pub const MAX_ID_BYTES: usize = rule::MAX_ID_BYTES;
/// Most items in one write or delete batch.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Most tags or lists on one customer.
pub const MAX_VALUES_PER_CUSTOMER: usize = 256;
/// Most ids in a segment's include or exclude list.
pub const MAX_LISTED_CUSTOMERS: usize = 10_000;
/// Longest segment title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The largest amount in cents (twelve digits before the point).
pub const MAX_CENTS: i64 = rule::MAX_AMOUNT_CENTS as i64;
/// The last instant accepted: the end of year 9999.
pub const MAX_SECONDS: Seconds = 253_402_300_799;

/// A tenant name: 1 to 64 bytes of letters, digits, `.`, `_` and `-`.
pub fn tenant(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid("tenant", "give a tenant"));
    }
    if name.len() > MAX_TENANT_BYTES {
        return Err(Error::invalid(
            "tenant",
            format!("longer than {MAX_TENANT_BYTES} bytes"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(Error::invalid(
            "tenant",
            format!("`{name}` has `{bad}`; use letters, digits, `.`, `_` and `-`"),
        ));
    }
    Ok(name.to_owned())
}

/// A non-empty id of at most `MAX_ID_BYTES` without control characters.
pub fn id(value: &str, field: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A batch of at most `MAX_BATCH_ITEMS`, and not empty.
pub fn batch_size(len: usize, field: &str) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid(field, "give at least one item"));
    }
    if len > MAX_BATCH_ITEMS {
        return Err(Error::ResourceExhausted(format!(
            "{field}: {len} items, more than the {MAX_BATCH_ITEMS} a batch may hold"
        )));
    }
    Ok(())
}

/// A timestamp as whole seconds, between 1970 and the end of 9999.
pub fn seconds(timestamp: &Timestamp, field: &str) -> Result<Seconds> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(Error::invalid(
            field,
            format!("nanos {} is outside 0 ..= 999999999", timestamp.nanos),
        ));
    }
    if !(0..=MAX_SECONDS).contains(&timestamp.seconds) {
        return Err(Error::invalid(
            field,
            "must lie between 1970-01-01 and 9999-12-31",
        ));
    }
    Ok(timestamp.seconds)
}

/// The evaluation instant: `as_of`, or now.
pub fn instant(as_of: Option<&Timestamp>, now: Seconds) -> Result<Seconds> {
    as_of.map_or(Ok(now), |as_of| seconds(as_of, "as_of"))
}

/// An amount in cents (or a count), from 0 to `MAX_CENTS`.
pub(super) fn cents(value: i64, field: &str) -> Result<u64> {
    if !(0..=MAX_CENTS).contains(&value) {
        return Err(Error::invalid(
            field,
            format!("{value} is outside 0 ..= {MAX_CENTS}"),
        ));
    }
    Ok(value as u64)
}

/// Checks at most `max` values with `check` (given each value's field
/// path), keeping the first of equal results, in order.
fn unique_values(
    raw: &[String],
    max: usize,
    path: &str,
    mut check: impl FnMut(&str, &str) -> Result<String>,
) -> Result<Vec<String>> {
    if raw.len() > max {
        return Err(Error::invalid(path, format!("more than {max} values")));
    }
    let mut seen = HashSet::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let value = check(value, &format!("{path}[{i}]"))?;
        if seen.insert(value.clone()) {
            out.push(value);
        }
    }
    Ok(out)
}

/// Normalised, deduplicated values of a set-like field.
fn values(raw: &[String], field: SetField, path: &str) -> Result<Vec<String>> {
    unique_values(raw, MAX_VALUES_PER_CUSTOMER, path, |value, at| {
        let value = rules::set_value(field, value, at)?;
        if value.len() > MAX_ID_BYTES {
            return Err(Error::invalid(
                at,
                format!("longer than {MAX_ID_BYTES} bytes"),
            ));
        }
        Ok(value)
    })
}

/// One customer of an upsert.
pub fn customer(customer: proto::Customer, path: &str) -> Result<CustomerUpdate> {
    let proto::Customer {
        customer_id,
        email,
        phone,
        state,
        time_zone,
        tags,
        klaviyo_lists,
        lifetime_spend_cents,
        opted_in,
        create_time,
        replace_tags,
        replace_klaviyo_lists,
        add_klaviyo_lists,
        remove_klaviyo_lists,
    } = customer;
    let customer_id = id(&customer_id, &format!("{path}.customer_id"))?;
    let state = state
        .map(|state| optional_value(&state, SetField::State, &format!("{path}.state")))
        .transpose()?;
    let time_zone = time_zone
        .map(|zone| optional_value(&zone, SetField::Timezone, &format!("{path}.time_zone")))
        .transpose()?;
    let tags = (replace_tags || !tags.is_empty())
        .then(|| values(&tags, SetField::Tag, &format!("{path}.tags")))
        .transpose()?;
    let klaviyo_lists = (replace_klaviyo_lists || !klaviyo_lists.is_empty())
        .then(|| {
            values(
                &klaviyo_lists,
                SetField::KlaviyoList,
                &format!("{path}.klaviyo_lists"),
            )
        })
        .transpose()?;
    let add_klaviyo_lists = values(
        &add_klaviyo_lists,
        SetField::KlaviyoList,
        &format!("{path}.add_klaviyo_lists"),
    )?;
    let remove_klaviyo_lists = values(
        &remove_klaviyo_lists,
        SetField::KlaviyoList,
        &format!("{path}.remove_klaviyo_lists"),
    )?;
    let lifetime_spend_cents = lifetime_spend_cents
        .map(|value| cents(value, &format!("{path}.lifetime_spend_cents")))
        .transpose()?;
    let create_time = create_time
        .map(|time| seconds(&time, &format!("{path}.create_time")))
        .transpose()?;
    let short = |value: Option<String>, field: &str| -> Result<Option<String>> {
        match value {
            Some(value) if value.len() > MAX_ID_BYTES => Err(Error::invalid(
                format!("{path}.{field}"),
                format!("longer than {MAX_ID_BYTES} bytes"),
            )),
            value => Ok(value),
        }
    };
    Ok(CustomerUpdate {
        customer_id,
        email: short(email, "email")?,
        phone: short(phone, "phone")?,
        state,
        time_zone,
        tags,
        klaviyo_lists,
        add_klaviyo_lists,
        remove_klaviyo_lists,
        lifetime_spend_cents,
        opted_in,
        create_time,
    })
}

/// One key of `MatchCustomers`: at least one part, each a valid id.
pub fn customer_key(
    key: proto::CustomerKey,
    path: &str,
) -> Result<crate::engine::contacts::CustomerKey> {
    let proto::CustomerKey {
        customer_id,
        email,
        phone,
    } = key;
    if customer_id.is_empty() && email.trim().is_empty() && phone.trim().is_empty() {
        return Err(Error::invalid(
            path,
            "give a customer_id, an email or a phone",
        ));
    }
    for (value, field) in [
        (&customer_id, "customer_id"),
        (&email, "email"),
        (&phone, "phone"),
    ] {
        if !value.is_empty() {
            id(value, &format!("{path}.{field}"))?;
        }
    }
    Ok(crate::engine::contacts::CustomerKey {
        customer_id,
        email,
        phone,
    })
}

/// An attribute that an empty string clears.
fn optional_value(value: &str, field: SetField, path: &str) -> Result<Option<String>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    rules::set_value(field, value, path).map(Some)
}

/// One event of `RecordEvents`.
pub fn event(event: proto::Event, path: &str) -> Result<NewEvent> {
    let proto::Event {
        event_id,
        customer_id,
        time,
        kind,
    } = event;
    let event_id = id(&event_id, &format!("{path}.event_id"))?;
    let customer_id = id(&customer_id, &format!("{path}.customer_id"))?;
    let time =
        time.ok_or_else(|| Error::invalid(format!("{path}.time"), "every event needs a time"))?;
    let time = seconds(&time, &format!("{path}.time"))?;
    let kind = kind.ok_or_else(|| {
        Error::invalid(
            path,
            "give one of order, message, click, abandoned_cart, answer, opt_in, opt_out",
        )
    })?;
    let data = match kind {
        Kind::Order(order) => EventData::Order {
            value_cents: cents(order.value_cents, &format!("{path}.order.value_cents"))?,
        },
        Kind::Message(_) => EventData::Message,
        Kind::Click(click) => EventData::Click {
            broadcast_id: id(&click.broadcast_id, &format!("{path}.click.broadcast_id"))?,
        },
        Kind::AbandonedCart(cart) => EventData::AbandonedCart {
            value_cents: cents(
                cart.value_cents,
                &format!("{path}.abandoned_cart.value_cents"),
            )?,
        },
        Kind::Answer(answer) => EventData::Answer {
            experience_id: id(
                &answer.experience_id,
                &format!("{path}.answer.experience_id"),
            )?,
            question_id: id(&answer.question_id, &format!("{path}.answer.question_id"))?,
            answer: id(&answer.answer, &format!("{path}.answer.answer"))?,
        },
        Kind::OptIn(_) => EventData::OptIn,
        Kind::OptOut(_) => EventData::OptOut,
    };
    Ok(NewEvent {
        event_id,
        customer_id,
        time,
        data,
    })
}

/// The audience of a request, whichever request it came in.
pub enum AudienceField {
    RuleText(String),
    Rule(proto::Rule),
    SegmentId(String),
    SnapshotId(String),
}

/// Each request's `audience` oneof has the same four (or three) cases.
macro_rules! audience_field_from {
    ($($oneof:path),* $(,)?) => {$(
        impl From<$oneof> for AudienceField {
            fn from(audience: $oneof) -> Self {
                use $oneof as Audience;
                match audience {
                    Audience::RuleText(text) => AudienceField::RuleText(text),
                    Audience::Rule(rule) => AudienceField::Rule(rule),
                    Audience::SegmentId(id) => AudienceField::SegmentId(id),
                    Audience::SnapshotId(id) => AudienceField::SnapshotId(id),
                }
            }
        }
    )*};
}

audience_field_from!(
    proto::count_audience_request::Audience,
    proto::resolve_segment_request::Audience,
    proto::export_audience_request::Audience,
    proto::audience_spec::Audience,
);

impl From<proto::create_snapshot_request::Audience> for AudienceField {
    fn from(audience: proto::create_snapshot_request::Audience) -> Self {
        use proto::create_snapshot_request::Audience;
        match audience {
            Audience::RuleText(text) => AudienceField::RuleText(text),
            Audience::Rule(rule) => AudienceField::Rule(rule),
            Audience::SegmentId(id) => AudienceField::SegmentId(id),
        }
    }
}

/// Parses or converts an audience; `prefix` names the field that holds it
/// (`before.` in `DiffAudiences`, empty for a request's own fields).
pub fn audience_at(field: Option<AudienceField>, prefix: &str) -> Result<Audience> {
    let at = |name: &str| format!("{prefix}{name}");
    match field {
        None => Err(Error::invalid(
            if prefix.is_empty() {
                "audience".to_owned()
            } else {
                prefix.trim_end_matches('.').to_owned()
            },
            "give one of rule_text, rule, segment_id or snapshot_id",
        )),
        Some(AudienceField::RuleText(text)) => {
            parse_rule_text(&text, &at("rule_text")).map(Audience::Rule)
        }
        Some(AudienceField::Rule(rule)) => rules::from_proto(rule, &at("rule")).map(Audience::Rule),
        Some(AudienceField::SegmentId(segment_id)) => {
            id(&segment_id, &at("segment_id")).map(Audience::Segment)
        }
        Some(AudienceField::SnapshotId(snapshot_id)) => {
            id(&snapshot_id, &at("snapshot_id")).map(Audience::Snapshot)
        }
    }
}

/// Parses or converts the audience of a request.
pub fn audience(field: Option<AudienceField>) -> Result<Audience> {
    audience_at(field, "")
}

/// Parses a rule text, with limits.
pub fn parse_rule_text(text: &str, field: &str) -> Result<rule::Rule> {
    if text.trim().is_empty() {
        return Err(Error::invalid(field, "the rule is empty"));
    }
    rule::parse(text).map_err(|error| Error::RuleSyntax {
        field: field.to_owned(),
        error,
    })
}

/// The new segment of a `CreateSegment`.
pub fn segment_input(segment: proto::Segment, segment_id: &str) -> Result<SegmentInput> {
    let proto::Segment {
        segment_id: inner_id,
        title,
        rule_text,
        included_customer_ids,
        excluded_customer_ids,
        version: _,
        archived: _,
        create_time: _,
        update_time: _,
        rule,
        member_count: _,
        sendable_count: _,
    } = segment;
    check_segment_id_and_title(&inner_id, segment_id, &title)?;
    let rule = segment_rule(&rule_text, rule)?;
    let included = id_list(included_customer_ids, "segment.included_customer_ids")?;
    let excluded = id_list(excluded_customer_ids, "segment.excluded_customer_ids")?;
    if rule.is_none() && included.is_empty() {
        return Err(Error::invalid(
            "segment.rule_text",
            "give a rule, or at least one included customer",
        ));
    }
    Ok(SegmentInput {
        title,
        rule,
        included_customer_ids: included,
        excluded_customer_ids: excluded,
    })
}

fn id_list(ids: Vec<String>, field: &str) -> Result<Vec<String>> {
    unique_values(&ids, MAX_LISTED_CUSTOMERS, field, id)
}

/// A stored segment as the API shows it.
pub fn segment_to_proto(record: SegmentRecord) -> proto::Segment {
    let rule = (!record.rule_text.is_empty())
        .then(|| rule::parse(&record.rule_text).ok())
        .flatten()
        .map(|rule| rules::to_proto(&rule));
    proto::Segment {
        segment_id: record.segment_id,
        title: record.title,
        rule_text: record.rule_text,
        included_customer_ids: record.included_customer_ids,
        excluded_customer_ids: record.excluded_customer_ids,
        version: record.version,
        archived: record.archived,
        create_time: Some(micros_to_timestamp(record.create_time_micros)),
        update_time: Some(micros_to_timestamp(record.update_time_micros)),
        rule,
        member_count: None,
        sendable_count: None,
    }
}

/// A snapshot as the API shows it.
pub fn snapshot_to_proto(info: crate::engine::snapshots::SnapshotInfo) -> proto::Snapshot {
    let record = info.record;
    proto::Snapshot {
        snapshot_id: record.snapshot_id,
        title: record.title,
        rule_text: record.rule_text,
        segment_id: record.segment_id,
        as_of: Some(Timestamp {
            seconds: record.as_of,
            nanos: 0,
        }),
        create_time: Some(micros_to_timestamp(record.create_time_micros)),
        taken_count: record.taken_count,
        count: info.count,
    }
}

/// A rule node's path as the API writes it: child positions joined by dots.
pub fn node_path(path: &[usize]) -> String {
    path.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn micros_to_timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// The changes of an `UpdateSegment`: the fields `update_mask` names, or all.
pub fn segment_changes(
    segment: proto::Segment,
    update_mask: Option<prost_types::FieldMask>,
    segment_id: &str,
) -> Result<crate::engine::lifecycle::SegmentChanges> {
    const FIELDS: [&str; 5] = [
        "title",
        "rule_text",
        "rule",
        "included_customer_ids",
        "excluded_customer_ids",
    ];
    let paths: Vec<String> = update_mask.map(|mask| mask.paths).unwrap_or_default();
    if let Some(unknown) = paths.iter().find(|path| !FIELDS.contains(&path.as_str())) {
        return Err(Error::invalid(
            "update_mask",
            format!("`{unknown}` cannot be updated; use {}", FIELDS.join(", ")),
        ));
    }
    let named = |field: &str| paths.is_empty() || paths.iter().any(|path| path == field);
    check_segment_id_and_title(&segment.segment_id, segment_id, &segment.title)?;
    let rule = if named("rule_text") || named("rule") {
        Some(segment_rule(&segment.rule_text, segment.rule)?)
    } else {
        None
    };
    Ok(crate::engine::lifecycle::SegmentChanges {
        title: named("title").then_some(segment.title),
        rule,
        included_customer_ids: named("included_customer_ids")
            .then(|| {
                id_list(
                    segment.included_customer_ids,
                    "segment.included_customer_ids",
                )
            })
            .transpose()?,
        excluded_customer_ids: named("excluded_customer_ids")
            .then(|| {
                id_list(
                    segment.excluded_customer_ids,
                    "segment.excluded_customer_ids",
                )
            })
            .transpose()?,
    })
}

/// Refuses a `segment.segment_id` that differs from the request's, and an
/// overlong title.
fn check_segment_id_and_title(inner_id: &str, segment_id: &str, title: &str) -> Result<()> {
    if !inner_id.is_empty() && inner_id != segment_id {
        return Err(Error::invalid(
            "segment.segment_id",
            format!(
                "`{inner_id}` differs from the request's segment_id `{segment_id}`; leave it empty"
            ),
        ));
    }
    check_title(title, "segment.title")
}

/// Refuses a title longer than `MAX_TITLE_CHARS`.
pub fn check_title(title: &str, field: &str) -> Result<()> {
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A segment's rule from `rule_text` or `rule` (at most one); `None` for a
/// segment of its include list only.
fn segment_rule(rule_text: &str, rule: Option<proto::Rule>) -> Result<Option<rule::Rule>> {
    match (rule_text.trim().is_empty(), rule) {
        (false, Some(_)) => Err(Error::invalid(
            "segment",
            "give rule_text or rule, not both",
        )),
        (false, None) => parse_rule_text(rule_text, "segment.rule_text").map(Some),
        (true, Some(rule)) => rules::from_proto(rule, "segment.rule").map(Some),
        (true, None) => Ok(None),
    }
}
