//! The storage layout: every key segmentd writes to sled, in one tree.
//!
//! A key starts with a one-byte table tag and the tenant (length-prefixed),
//! so one tenant's rows of one table form a contiguous, prefix-scannable
//! range. Integers are big-endian so that byte order is numeric order.
//!
//! | tag | key after the tenant | value |
//! | --- | --- | --- |
//! | `M` | (none) | tenant meta, JSON |
//! | `N` | chunk of 1,024 dense ids (u32) | the customer ids of those dense ids (see `names`) |
//! | `X` | customer id | dense id, u32 (format 2 and older; moved to `N` rows on upgrade) |
//! | `C` | dense id | customer record, JSON |
//! | `E` | event id | (empty): the event was applied |
//! | `I` | write sequence (u64) | the batch's event ids, until they are `E` rows (see `event_ids`) |
//! | `T` | event kind, time, dense id | write sequence, payload: time index of events (format 1, read only) |
//! | `H` | event kind, UTC day, write sequence | the batch's events of that kind and day (see `history`) |
//! | `B` | bitmap key, chunk | one 2^16-id chunk of a bitmap, roaring format |
//! | `D` | write sequence (u64) | a batch's bitmap changes since the last checkpoint (see `delta`) |
//! | `S` | segment id | segment record, JSON |
//! | `K` | `e` or `p`, length (u16), e-mail or phone, dense id | (empty): customers by contact |
//! | `P` | snapshot id | snapshot record, JSON |
//! | `Q` | snapshot id | the snapshot's members (dense ids), roaring format |
//! | `A` | key id | an API key of the tenant, JSON (its secret only as a hash) |
//! | `F` | feed sequence (u64) | one change-feed entry, JSON (see `feed`) |
//! | `G` | segment id | feed sequence (u64), then the segment's members then, roaring format |
//! | `V` | (none) | the last feed sequence handed out (u64) |
//! | `Y` | dense id (u32) | a deleted customer's id, until the feed's members are stored without it |
//!
//! Bitmaps are stored a chunk (the ids sharing their high 16 bits) per key;
//! a write stores only its changes as a `D` row, and a checkpoint now and
//! then rewrites the chunks those rows touched.

use crate::error::{Error, Result};
use crate::rule::EventKind;
use crate::time::{DayNumber, Seconds};

/// The key that marks a data directory as segmentd's, with its format version.
pub const FORMAT_KEY: &[u8] = b"\0format";
/// The storage format this build writes.
pub const FORMAT_VERSION: &[u8] = b"segmentd-storage-3";
/// The format before customer ids moved from `X` rows to `N` chunks.
pub const FORMAT_VERSION_2: &[u8] = b"segmentd-storage-2";
/// An older format this build reads and upgrades: the same rows without `D`.
pub const FORMAT_VERSION_1: &[u8] = b"segmentd-storage-1";

pub const TAG_META: u8 = b'M';
pub const TAG_EXTERNAL_ID: u8 = b'X';
pub const TAG_NAMES: u8 = b'N';
pub const TAG_CUSTOMER: u8 = b'C';
pub const TAG_EVENT_ID: u8 = b'E';
pub const TAG_EVENT_IDS: u8 = b'I';
pub const TAG_EVENT_TIME: u8 = b'T';
pub const TAG_EVENT_PACK: u8 = b'H';
pub const TAG_BITMAP: u8 = b'B';
pub const TAG_BITMAP_DELTA: u8 = b'D';
pub const TAG_SEGMENT: u8 = b'S';
pub const TAG_CONTACT: u8 = b'K';
pub const TAG_SNAPSHOT: u8 = b'P';
pub const TAG_SNAPSHOT_MEMBERS: u8 = b'Q';
pub const TAG_API_KEY: u8 = b'A';
/// Change-feed entries, members checkpoints and head (`store::feed`).
pub const TAG_FEED_ENTRY: u8 = b'F';
pub const TAG_FEED_MEMBERS: u8 = b'G';
pub const TAG_FEED_HEAD: u8 = b'V';
pub const TAG_FEED_DEPARTED: u8 = b'Y';

/// The prefix of one tenant's rows of one table.
pub fn tenant_prefix(tag: u8, tenant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + tenant.len() + 16);
    key.push(tag);
    // Tenant names are at most 64 bytes (checked at the API).
    key.push(tenant.len() as u8);
    key.extend_from_slice(tenant.as_bytes());
    key
}

/// Splits a key into its table tag, tenant and the rest.
pub fn split_key(key: &[u8]) -> Result<(u8, &str, &[u8])> {
    let (&tag, rest) = key.split_first().ok_or_else(|| corrupt_key(key))?;
    let (&len, rest) = rest.split_first().ok_or_else(|| corrupt_key(key))?;
    if rest.len() < len as usize {
        return Err(corrupt_key(key));
    }
    let (tenant, rest) = rest.split_at(len as usize);
    let tenant = std::str::from_utf8(tenant).map_err(|_| corrupt_key(key))?;
    Ok((tag, tenant, rest))
}

pub fn meta_key(tenant: &str) -> Vec<u8> {
    tenant_prefix(TAG_META, tenant)
}

pub fn external_id_key(tenant: &str, customer_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_EXTERNAL_ID, tenant);
    key.extend_from_slice(customer_id.as_bytes());
    key
}

/// The row of the customer ids of one chunk of dense ids.
pub fn names_key(tenant: &str, chunk: u32) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_NAMES, tenant);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

pub fn customer_key(tenant: &str, dense: u32) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_CUSTOMER, tenant);
    key.extend_from_slice(&dense.to_be_bytes());
    key
}

/// The row of one batch's event ids, kept until they are indexed.
pub fn event_ids_key(tenant: &str, sequence: u64) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_EVENT_IDS, tenant);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

pub fn event_id_key(tenant: &str, event_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_EVENT_ID, tenant);
    key.extend_from_slice(event_id.as_bytes());
    key
}

pub fn api_key_key(tenant: &str, key_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_API_KEY, tenant);
    key.extend_from_slice(key_id.as_bytes());
    key
}

pub fn segment_key(tenant: &str, segment_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_SEGMENT, tenant);
    key.extend_from_slice(segment_id.as_bytes());
    key
}

/// How a customer can be reached, for matching imported rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactKind {
    Email,
    Phone,
}

/// The prefix of the customers with one normalised e-mail or phone.
pub fn contact_prefix(tenant: &str, kind: ContactKind, value: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_CONTACT, tenant);
    key.push(match kind {
        ContactKind::Email => b'e',
        ContactKind::Phone => b'p',
    });
    // Ids are at most 256 bytes (checked at the API).
    key.extend_from_slice(&(value.len() as u16).to_be_bytes());
    key.extend_from_slice(value.as_bytes());
    key
}

pub fn contact_key(tenant: &str, kind: ContactKind, value: &str, dense: u32) -> Vec<u8> {
    let mut key = contact_prefix(tenant, kind, value);
    key.extend_from_slice(&dense.to_be_bytes());
    key
}

pub fn snapshot_key(tenant: &str, snapshot_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_SNAPSHOT, tenant);
    key.extend_from_slice(snapshot_id.as_bytes());
    key
}

pub fn snapshot_members_key(tenant: &str, snapshot_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_SNAPSHOT_MEMBERS, tenant);
    key.extend_from_slice(snapshot_id.as_bytes());
    key
}

/// Maps a signed time to an unsigned one with the same order.
fn ordered_time(t: Seconds) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The prefix of one event kind's time index.
pub fn event_time_prefix(tenant: &str, kind: EventKind) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_EVENT_TIME, tenant);
    key.push(event_kind_code(kind));
    key
}

pub fn event_time_key(tenant: &str, kind: EventKind, t: Seconds, dense: u32) -> Vec<u8> {
    let mut key = event_time_prefix(tenant, kind);
    key.extend_from_slice(&ordered_time(t));
    key.extend_from_slice(&dense.to_be_bytes());
    key
}

/// The packed time-index row of one kind, UTC day and write batch.
pub fn event_pack_key(tenant: &str, kind: EventKind, utc_day: i64, sequence: u64) -> Vec<u8> {
    let mut key = event_pack_bound(tenant, kind, utc_day);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The first packed row of a kind's UTC day.
pub fn event_pack_bound(tenant: &str, kind: EventKind, utc_day: i64) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_EVENT_PACK, tenant);
    key.push(event_kind_code(kind));
    key.extend_from_slice(&ordered_time(utc_day));
    key
}

/// The event kind and write sequence of a packed row's key, given the part
/// after the tenant.
pub fn decode_event_pack(rest: &[u8]) -> Result<(EventKind, u64)> {
    let corrupt = || corrupt_key(rest);
    let parts: &[u8; 17] = rest.try_into().map_err(|_| corrupt())?;
    let kind = event_kind_from_code(parts[0]).ok_or_else(corrupt)?;
    let sequence = u64::from_be_bytes(parts[9..].try_into().map_err(|_| corrupt())?);
    Ok((kind, sequence))
}

/// The first key at or after time `t` in a kind's time index.
pub fn event_time_bound(tenant: &str, kind: EventKind, t: Seconds) -> Vec<u8> {
    let mut key = event_time_prefix(tenant, kind);
    key.extend_from_slice(&ordered_time(t));
    key
}

/// The event kind, time and dense id of a time-index key, given the part
/// after the tenant.
pub fn decode_event_time(rest: &[u8]) -> Result<(EventKind, Seconds, u32)> {
    let corrupt = || corrupt_key(rest);
    let (&code, rest) = rest.split_first().ok_or_else(corrupt)?;
    let kind = event_kind_from_code(code).ok_or_else(corrupt)?;
    let time: [u8; 8] = rest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let dense: [u8; 4] = rest
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let time = (u64::from_be_bytes(time) ^ (1 << 63)) as Seconds;
    Ok((kind, time, u32::from_be_bytes(dense)))
}

/// The dense id at the end of a time-index key.
pub fn event_time_dense(key: &[u8]) -> Result<u32> {
    let tail: [u8; 4] = key
        .len()
        .checked_sub(4)
        .and_then(|start| key[start..].try_into().ok())
        .ok_or_else(|| corrupt_key(key))?;
    Ok(u32::from_be_bytes(tail))
}

pub fn event_kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Ordered => 1,
        EventKind::Messaged => 2,
        EventKind::Clicked => 3,
        EventKind::AbandonedCart => 4,
    }
}

pub fn event_kind_from_code(code: u8) -> Option<EventKind> {
    Some(match code {
        1 => EventKind::Ordered,
        2 => EventKind::Messaged,
        3 => EventKind::Clicked,
        4 => EventKind::AbandonedCart,
        _ => return None,
    })
}

/// A number kept per customer as a bit-sliced index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NumberAttr {
    /// Sum of order values, cents; 0 without orders.
    Spent,
    /// Number of orders; 0 without orders.
    OrderCount,
    /// The store's lifetime-spend attribute, cents; may be unset.
    LifetimeSpend,
    /// The value of the latest abandoned cart, cents; may be unset.
    CartValue,
    /// Creation time, seconds since the epoch (never negative).
    Created,
}

impl NumberAttr {
    fn code(self) -> u8 {
        match self {
            NumberAttr::Spent => 1,
            NumberAttr::OrderCount => 2,
            NumberAttr::LifetimeSpend => 3,
            NumberAttr::CartValue => 4,
            NumberAttr::Created => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => NumberAttr::Spent,
            2 => NumberAttr::OrderCount,
            3 => NumberAttr::LifetimeSpend,
            4 => NumberAttr::CartValue,
            5 => NumberAttr::Created,
            _ => return None,
        })
    }
}

/// What one stored bitmap holds: the customers with one qualifier value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BitmapKey {
    /// The tenant's live customers.
    Live,
    /// Customers whose SMS consent is given now.
    OptedIn,
    /// Customers with at least one event of a kind, ever.
    EventAny(EventKind),
    /// Customers with an event of a kind on one local day.
    EventDay(EventKind, DayNumber),
    /// Customers carrying a tag (normalised).
    Tag(String),
    /// Customers in a state (code).
    State(String),
    /// Customers in a time zone (IANA name).
    Timezone(String),
    /// Members of a Klaviyo list.
    KlaviyoList(String),
    /// Customers with any value of a set-like field (tag, state, timezone, list).
    Present(u8),
    /// Bit `n` of a bit-sliced number.
    Slice(NumberAttr, u8),
    /// Customers that have a value of a bit-sliced number.
    Exists(NumberAttr),
    /// Customers who have answered a question of an experience.
    Answered {
        experience: String,
        question: String,
    },
    /// Customers whose latest answer to a question is this answer.
    Answer {
        experience: String,
        question: String,
        answer: String,
    },
    /// Customers who clicked a link of one broadcast, ever.
    ClickedBroadcast(String),
    /// Customers who clicked a link of one broadcast on one local day.
    ClickedBroadcastDay(String, DayNumber),
}

/// `BitmapKey::Present` codes.
pub const PRESENT_TAG: u8 = 1;
pub const PRESENT_STATE: u8 = 2;
pub const PRESENT_TIMEZONE: u8 = 3;
pub const PRESENT_KLAVIYO_LIST: u8 = 4;

impl BitmapKey {
    /// Appends the self-delimiting encoding of the key.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, s: &str) {
            // Values are limited far below 64 KiB at the API.
            let len = s.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..len]);
        }
        match self {
            BitmapKey::Live => out.push(1),
            BitmapKey::OptedIn => out.push(2),
            BitmapKey::EventAny(kind) => out.extend_from_slice(&[3, event_kind_code(*kind)]),
            BitmapKey::EventDay(kind, day) => {
                out.extend_from_slice(&[4, event_kind_code(*kind)]);
                out.extend_from_slice(&ordered_day(*day));
            }
            BitmapKey::Tag(value) => {
                out.push(5);
                string(out, value);
            }
            BitmapKey::State(value) => {
                out.push(6);
                string(out, value);
            }
            BitmapKey::Timezone(value) => {
                out.push(7);
                string(out, value);
            }
            BitmapKey::KlaviyoList(value) => {
                out.push(8);
                string(out, value);
            }
            BitmapKey::Present(field) => out.extend_from_slice(&[9, *field]),
            BitmapKey::Slice(attr, bit) => out.extend_from_slice(&[10, attr.code(), *bit]),
            BitmapKey::Exists(attr) => out.extend_from_slice(&[11, attr.code()]),
            BitmapKey::Answered {
                experience,
                question,
            } => {
                out.push(12);
                string(out, experience);
                string(out, question);
            }
            BitmapKey::Answer {
                experience,
                question,
                answer,
            } => {
                out.push(13);
                string(out, experience);
                string(out, question);
                string(out, answer);
            }
            BitmapKey::ClickedBroadcast(broadcast) => {
                out.push(14);
                string(out, broadcast);
            }
            BitmapKey::ClickedBroadcastDay(broadcast, day) => {
                out.push(15);
                string(out, broadcast);
                out.extend_from_slice(&ordered_day(*day));
            }
        }
    }

    /// Whether the bitmap holds local days, and so depends on the tenant's time zone.
    pub fn is_day(&self) -> bool {
        matches!(
            self,
            BitmapKey::EventDay(..) | BitmapKey::ClickedBroadcastDay(..)
        )
    }

    /// Decodes a key from the front of `bytes`, returning the rest.
    pub fn decode(bytes: &[u8]) -> Option<(BitmapKey, &[u8])> {
        fn day(bytes: &[u8]) -> Option<DayNumber> {
            let raw = u32::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 31);
            Some(raw as DayNumber)
        }
        fn string(bytes: &[u8]) -> Option<(String, &[u8])> {
            let len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
            let value = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
            Some((value.to_owned(), &bytes[2 + len..]))
        }
        let (&code, rest) = bytes.split_first()?;
        Some(match code {
            1 => (BitmapKey::Live, rest),
            2 => (BitmapKey::OptedIn, rest),
            3 => (
                BitmapKey::EventAny(event_kind_from_code(*rest.first()?)?),
                &rest[1..],
            ),
            4 => {
                let kind = event_kind_from_code(*rest.first()?)?;
                (BitmapKey::EventDay(kind, day(rest.get(1..5)?)?), &rest[5..])
            }
            5 => string(rest).map(|(v, r)| (BitmapKey::Tag(v), r))?,
            6 => string(rest).map(|(v, r)| (BitmapKey::State(v), r))?,
            7 => string(rest).map(|(v, r)| (BitmapKey::Timezone(v), r))?,
            8 => string(rest).map(|(v, r)| (BitmapKey::KlaviyoList(v), r))?,
            9 => (BitmapKey::Present(*rest.first()?), &rest[1..]),
            10 => {
                let attr = NumberAttr::from_code(*rest.first()?)?;
                (BitmapKey::Slice(attr, *rest.get(1)?), &rest[2..])
            }
            11 => (
                BitmapKey::Exists(NumberAttr::from_code(*rest.first()?)?),
                &rest[1..],
            ),
            12 => {
                let (experience, rest) = string(rest)?;
                let (question, rest) = string(rest)?;
                (
                    BitmapKey::Answered {
                        experience,
                        question,
                    },
                    rest,
                )
            }
            13 => {
                let (experience, rest) = string(rest)?;
                let (question, rest) = string(rest)?;
                let (answer, rest) = string(rest)?;
                (
                    BitmapKey::Answer {
                        experience,
                        question,
                        answer,
                    },
                    rest,
                )
            }
            14 => string(rest).map(|(v, r)| (BitmapKey::ClickedBroadcast(v), r))?,
            15 => {
                let (broadcast, rest) = string(rest)?;
                (
                    BitmapKey::ClickedBroadcastDay(broadcast, day(rest.get(..4)?)?),
                    &rest[4..],
                )
            }
            _ => return None,
        })
    }
}

/// Maps a signed day to an unsigned one with the same order.
fn ordered_day(day: DayNumber) -> [u8; 4] {
    ((day as u32) ^ (1 << 31)).to_be_bytes()
}

/// The key of one chunk (ids `chunk << 16 ..`) of a tenant's bitmap.
pub fn bitmap_chunk_key(tenant: &str, bitmap: &BitmapKey, chunk: u16) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_BITMAP, tenant);
    bitmap.encode_into(&mut key);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// The key of the bitmap delta row of write batch `sequence`.
pub fn bitmap_delta_key(tenant: &str, sequence: u64) -> Vec<u8> {
    let mut key = tenant_prefix(TAG_BITMAP_DELTA, tenant);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The write sequence of a `D` or `I` row, given the key after the tenant.
pub fn decode_sequence(rest: &[u8]) -> Result<u64> {
    rest.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt_key(rest))
}

/// Decodes the part of a bitmap chunk key after the tenant.
pub fn decode_bitmap_chunk(rest: &[u8]) -> Result<(BitmapKey, u16)> {
    let (bitmap, tail) = BitmapKey::decode(rest).ok_or_else(|| corrupt_key(rest))?;
    let chunk: [u8; 2] = tail.try_into().map_err(|_| corrupt_key(rest))?;
    Ok((bitmap, u16::from_be_bytes(chunk)))
}

fn corrupt_key(key: &[u8]) -> Error {
    Error::Corrupt(format!("malformed key {key:02x?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_keys_decode_to_what_was_encoded() {
        let keys = [
            BitmapKey::Live,
            BitmapKey::OptedIn,
            BitmapKey::EventAny(EventKind::Clicked),
            BitmapKey::EventDay(EventKind::Ordered, -5),
            BitmapKey::EventDay(EventKind::AbandonedCart, 20_500),
            BitmapKey::Tag("vip".into()),
            BitmapKey::State("CA".into()),
            BitmapKey::Timezone("America/Chicago".into()),
            BitmapKey::KlaviyoList("Xy12ab".into()),
            BitmapKey::Present(PRESENT_TAG),
            BitmapKey::Slice(NumberAttr::Spent, 17),
            BitmapKey::Exists(NumberAttr::LifetimeSpend),
            BitmapKey::Answered {
                experience: "fit".into(),
                question: "size".into(),
            },
            BitmapKey::Answer {
                experience: "fit".into(),
                question: "size".into(),
                answer: "Medium".into(),
            },
            BitmapKey::ClickedBroadcast("b-1".into()),
            BitmapKey::ClickedBroadcastDay("b-1".into(), -3),
        ];
        for key in keys {
            let encoded = bitmap_chunk_key("t", &key, 513);
            let (tag, tenant, rest) = split_key(&encoded).unwrap();
            assert_eq!((tag, tenant), (TAG_BITMAP, "t"));
            assert_eq!(decode_bitmap_chunk(rest).unwrap(), (key, 513));
        }
    }

    #[test]
    fn event_time_keys_sort_by_time_across_the_epoch() {
        let a = event_time_key("t", EventKind::Ordered, -10, 7);
        let b = event_time_key("t", EventKind::Ordered, 5, 1);
        let c = event_time_key("t", EventKind::Ordered, 6, 0);
        assert!(a < b && b < c);
        assert_eq!(event_time_dense(&b).unwrap(), 1);
    }
}
