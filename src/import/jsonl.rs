//! Event files: one JSON object per line, `{"customer": {...}}` or
//! `{"event": {...}}`, the inner object in the proto3 JSON form of
//! `Customer` or `Event`, exactly as in a grpcurl payload. An event without
//! an id gets one from the file (its name and a hash of its first 64 KiB)
//! and the line, so that importing the same file again, moved or grown by
//! appending, changes nothing, while two files that share a name do not
//! collide.

use std::io::Read;
use std::path::Path;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use crate::proto::{self, import_record};

/// Bytes at the start of a file that name it in derived event ids.
const HEAD_BYTES: u64 = 64 * 1024;

/// What derived event ids start with: `name:hash`, the hash of the file's
/// first 64 KiB (FNV-1a, stable across builds and machines).
pub fn source_of(path: &Path) -> std::io::Result<String> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(HEAD_BYTES)
        .read_to_end(&mut head)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "{name}:{:016x}",
        crate::service::token::fnv1a(&head)
    ))
}

/// One line's record.
pub enum Record {
    Customer(proto::Customer),
    Event(proto::Event),
}

/// Reads lines with the descriptors the server itself is built from.
pub struct LineReader {
    descriptor: MessageDescriptor,
    /// Prefix of derived event ids: the file's name.
    source: String,
}

impl LineReader {
    /// A reader whose derived event ids start with `source` (see [`source_of`]).
    pub fn new(source: &str) -> Result<Self, String> {
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
            .map_err(|error| format!("the built-in descriptors do not load: {error}"))?;
        let descriptor = pool
            .get_message_by_name("segmentd.v1.ImportRecord")
            .ok_or("the built-in descriptors lack segmentd.v1.ImportRecord")?;
        Ok(LineReader {
            descriptor,
            source: source.to_owned(),
        })
    }

    /// One line; `Ok(None)` for a blank one.
    pub fn record(&self, text: &str, line: u64) -> Result<Option<Record>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let mut json = serde_json::Deserializer::from_str(text);
        let message = DynamicMessage::deserialize(self.descriptor.clone(), &mut json)
            .and_then(|message| json.end().map(|()| message))
            .map_err(|error| format!("not a customer or event record: {error}"))?;
        let record: proto::ImportRecord = message
            .transcode_to()
            .map_err(|error| format!("the record does not fit `ImportRecord`: {error}"))?;
        match record.record {
            Some(import_record::Record::Customer(customer)) => Ok(Some(Record::Customer(customer))),
            Some(import_record::Record::Event(mut event)) => {
                if event.event_id.is_empty() {
                    event.event_id = format!("{}:{line}", self.source);
                }
                Ok(Some(Record::Event(event)))
            }
            None => Err("give `customer` or `event`".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpcurl_payloads_in_either_field_spelling() {
        let reader = LineReader::new("events.jsonl").unwrap();
        let customer = r#"{"customer": {"customer_id": "c1", "tags": ["vip"], "optedIn": true}}"#;
        let Some(Record::Customer(customer)) = reader.record(customer, 1).unwrap() else {
            panic!("a customer");
        };
        assert_eq!(customer.customer_id, "c1");
        assert_eq!(customer.opted_in, Some(true));
        let event = r#"{"event": {"customer_id": "c1", "time": "2026-11-30T15:04:05Z", "order": {"value_cents": "4999"}}}"#;
        let Some(Record::Event(event)) = reader.record(event, 7).unwrap() else {
            panic!("an event");
        };
        assert_eq!(event.event_id, "events.jsonl:7");
        assert_eq!(event.time.unwrap().seconds, 1_796_051_045);
        assert!(reader.record("   ", 8).unwrap().is_none());
        assert!(
            reader
                .record(r#"{"event": {"customer_id": 5}}"#, 9)
                .is_err()
        );
        assert!(reader.record(r#"{"custom": {}}"#, 10).is_err());
        assert!(reader.record(r#"{"event": {}} trailing"#, 11).is_err());
    }
}
