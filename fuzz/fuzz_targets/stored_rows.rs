//! Stored keys and rows (`store::keys`, `names`, `delta`, `event_ids`,
//! `history`, `feed`) and roaring's portable format, from arbitrary bytes.
//!
//! The first byte picks what the rest is read as (its value modulo the
//! number of arms, in the order of `Arm`). A damaged row must be refused
//! with an error, never a panic; what decodes must be exactly what the
//! encoder writes for the decoded value (every format here has one
//! spelling), except roaring bitmaps and delta rows, which must at least
//! decode to the same values again. The last arm builds values with
//! `arbitrary` and checks encode, then decode, gives them back.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use roaring::RoaringBitmap;
use segmentd::rule::EventKind;
use segmentd::store::keys::{self, BitmapKey, NumberAttr};
use segmentd::store::{delta, event_ids, history, names};

/// What the input after the first byte is read as.
#[derive(Debug, Clone, Copy)]
enum Arm {
    Key,
    BitmapChunk,
    BitmapKey,
    Names,
    Delta,
    EventIds,
    Roaring,
    KeyTail,
    EventPack,
    RoundTrips,
    FeedRows,
}

const ARMS: [Arm; 11] = [
    Arm::Key,
    Arm::BitmapChunk,
    Arm::BitmapKey,
    Arm::Names,
    Arm::Delta,
    Arm::EventIds,
    Arm::Roaring,
    Arm::KeyTail,
    Arm::EventPack,
    Arm::RoundTrips,
    Arm::FeedRows,
];

/// Bitmaps past this many ids are not walked one id at a time.
const MAX_WALKED_IDS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match ARMS[usize::from(selector) % ARMS.len()] {
        Arm::Key => check_key(bytes),
        Arm::BitmapChunk => check_bitmap_chunk(bytes),
        Arm::BitmapKey => check_bitmap_key(bytes),
        Arm::Names => check_names(bytes),
        Arm::Delta => check_delta(bytes),
        Arm::EventIds => check_event_ids(bytes),
        Arm::Roaring => check_roaring(bytes),
        Arm::KeyTail => check_key_tails(bytes),
        Arm::EventPack => check_event_pack(bytes),
        Arm::FeedRows => check_feed_rows(bytes),
        Arm::RoundTrips => {
            // Running out of input is not a failure, only a shorter case.
            let _ = check_round_trips(&mut Unstructured::new(bytes));
        }
    }
});

/// A change-feed entry (JSON) and a members checkpoint row: refused or,
/// once decoded, encoded and decoded again to the same value.
fn check_feed_rows(bytes: &[u8]) {
    use segmentd::store::feed;
    if let Ok(entry) = feed::decode_entry(bytes) {
        let again = feed::encode_entry(&entry).unwrap();
        assert_eq!(feed::decode_entry(&again).unwrap(), entry);
    }
    if let Ok(checkpoint) = feed::decode_members("s", bytes) {
        let again = feed::encode_members(&checkpoint).unwrap();
        assert_eq!(feed::decode_members("s", &again).unwrap(), checkpoint);
    }
}

fn check_key(key: &[u8]) {
    let Ok((tag, tenant, rest)) = keys::split_key(key) else {
        return;
    };
    let mut again = keys::tenant_prefix(tag, tenant);
    again.extend_from_slice(rest);
    assert_eq!(again, key);
}

fn check_bitmap_chunk(rest: &[u8]) {
    let Ok((bitmap, chunk)) = keys::decode_bitmap_chunk(rest) else {
        return;
    };
    let mut again = Vec::new();
    bitmap.encode_into(&mut again);
    again.extend_from_slice(&chunk.to_be_bytes());
    assert_eq!(again, rest, "{bitmap:?} chunk {chunk}");
}

fn check_bitmap_key(bytes: &[u8]) {
    let Some((bitmap, tail)) = BitmapKey::decode(bytes) else {
        return;
    };
    let mut again = Vec::new();
    bitmap.encode_into(&mut again);
    again.extend_from_slice(tail);
    assert_eq!(again, bytes, "{bitmap:?}");
}

/// Four bytes of chunk number (kept to the chunks that dense ids have),
/// then the row.
fn check_names(bytes: &[u8]) {
    let Some((chunk, row)) = bytes.split_first_chunk::<4>() else {
        return;
    };
    let chunk = u32::from_be_bytes(*chunk) >> names::CHUNK_BITS;
    let mut entries = Vec::new();
    let decoded = names::decode(chunk, row, |dense, name| {
        entries.push((dense, name.to_owned()));
        Ok(())
    });
    if decoded.is_err() {
        return;
    }

    for (dense, name) in &entries {
        assert_eq!(
            names::chunk_of(*dense),
            chunk,
            "dense id {dense} of `{name}`"
        );
    }
    let again = names::encode(entries.iter().map(|(dense, name)| (*dense, name.as_str())));
    assert_eq!(again.unwrap(), row);
}

fn check_delta(row: &[u8]) {
    let Some(changes) = decode_delta(row) else {
        return;
    };
    let count = u32::from_be_bytes(row[1..5].try_into().unwrap());
    assert_eq!(changes.len() as u64, u64::from(count), "bitmaps in the row");
    for (_, add, remove) in &changes {
        check_bitmap(add);
        check_bitmap(remove);
    }

    let again = delta::encode(changes.iter().map(|(key, add, remove)| (key, add, remove)))
        .expect("a decoded delta encodes");
    assert_eq!(decode_delta(&again).as_ref(), Some(&changes));
}

fn decode_delta(row: &[u8]) -> Option<Vec<(BitmapKey, RoaringBitmap, RoaringBitmap)>> {
    let mut changes = Vec::new();
    delta::decode(row, |key, add, remove| changes.push((key, add, remove))).ok()?;
    Some(changes)
}

fn check_event_ids(row: &[u8]) {
    let Ok(ids) = event_ids::decode(row) else {
        return;
    };
    assert_eq!(event_ids::encode(&ids).unwrap(), row, "{ids:?}");
}

fn check_roaring(bytes: &[u8]) {
    let Ok(bitmap) = RoaringBitmap::deserialize_from(bytes) else {
        return;
    };
    check_bitmap(&bitmap);

    let mut again = Vec::new();
    bitmap.serialize_into(&mut again).unwrap();
    assert_eq!(again.len(), bitmap.serialized_size());
    assert_eq!(RoaringBitmap::deserialize_from(&again[..]).unwrap(), bitmap);

    let chunks = delta::chunks_of(&bitmap);
    assert!(
        chunks.windows(2).all(|pair| pair[0] < pair[1]),
        "{chunks:?}"
    );
    for chunk in chunks {
        let (low, high) = segmentd::store::chunk_bounds(chunk);
        assert!(bitmap.range(low..=high).next().is_some(), "chunk {chunk}");
    }
}

/// A bitmap's count, bounds and order agree with its ids.
fn check_bitmap(bitmap: &RoaringBitmap) {
    let mut ids = bitmap.iter();
    assert_eq!(bitmap.min(), ids.clone().next());
    assert_eq!(bitmap.max(), ids.next_back());
    if bitmap.len() > MAX_WALKED_IDS {
        return;
    }
    let all: Vec<u32> = bitmap.iter().collect();
    assert_eq!(all.len() as u64, bitmap.len());
    assert!(
        all.windows(2).all(|pair| pair[0] < pair[1]),
        "ids out of order"
    );
}

/// The parts of keys after the tenant: write sequences, event times and
/// packed event rows.
fn check_key_tails(rest: &[u8]) {
    if let Ok(sequence) = keys::decode_sequence(rest) {
        assert_eq!(sequence.to_be_bytes(), rest);
    }
    if let Ok((kind, t, dense)) = keys::decode_event_time(rest) {
        let key = keys::event_time_key("", kind, t, dense);
        // Format 1 keys are read only, and extra bytes after one are ignored.
        assert_eq!(key[2..], rest[..key.len() - 2], "{kind:?} {t} {dense}");
    }
    if let Ok((kind, sequence)) = keys::decode_event_pack(rest) {
        assert_eq!(rest.len(), 17);
        assert_eq!(rest[0], keys::event_kind_code(kind));
        assert_eq!(rest[9..], sequence.to_be_bytes());
    }
}

/// A packed event row: entries of time, dense id and payload.
fn check_event_pack(row: &[u8]) {
    let mut again = Vec::new();
    let decoded = history::each_entry(row, |t, dense, payload| {
        again.extend_from_slice(&t.to_be_bytes());
        again.extend_from_slice(&dense.to_be_bytes());
        again.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        again.extend_from_slice(payload);
    });
    if decoded.is_ok() {
        assert_eq!(again, row);
    }
}

/// Values built from the input, encoded, then decoded.
fn check_round_trips(u: &mut Unstructured) -> arbitrary::Result<()> {
    let tenant = tenant(u)?;
    let bitmap = bitmap_key(u)?;
    let chunk = u16::arbitrary(u)?;
    let key = keys::bitmap_chunk_key(&tenant, &bitmap, chunk);
    let (tag, tenant_back, rest) = keys::split_key(&key).expect("a bitmap chunk key splits");
    assert_eq!((tag, tenant_back), (keys::TAG_BITMAP, tenant.as_str()));
    assert_eq!(
        keys::decode_bitmap_chunk(rest).unwrap(),
        (bitmap.clone(), chunk)
    );

    let ids = Vec::<String>::arbitrary(u)?;
    let row = event_ids::encode(&ids).unwrap();
    assert_eq!(event_ids::decode(&row).unwrap(), ids);

    let name_chunk = u32::arbitrary(u)? >> names::CHUNK_BITS;
    let entries: Vec<(u32, String)> = Vec::<(u16, String)>::arbitrary(u)?
        .into_iter()
        .map(|(low, name)| {
            let dense = (name_chunk << names::CHUNK_BITS) | (u32::from(low) % 1024);
            (dense, name)
        })
        .collect();
    let row = names::encode(entries.iter().map(|(dense, name)| (*dense, name.as_str()))).unwrap();
    let mut back = Vec::new();
    names::decode(name_chunk, &row, |dense, name| {
        back.push((dense, name.to_owned()));
        Ok(())
    })
    .unwrap();
    assert_eq!(back, entries);

    let mut changes = vec![(bitmap, roaring(u)?, roaring(u)?)];
    for _ in 0..u.int_in_range(0..=3)? {
        changes.push((bitmap_key(u)?, roaring(u)?, roaring(u)?));
    }
    let row = delta::encode(changes.iter().map(|(key, add, remove)| (key, add, remove))).unwrap();
    assert_eq!(decode_delta(&row), Some(changes));
    Ok(())
}

/// A tenant name of at most 64 bytes, as the API allows.
fn tenant(u: &mut Unstructured) -> arbitrary::Result<String> {
    let mut name = String::arbitrary(u)?;
    while name.len() > 64 {
        name.pop();
    }
    Ok(name)
}

fn roaring(u: &mut Unstructured) -> arbitrary::Result<RoaringBitmap> {
    Ok(Vec::<u32>::arbitrary(u)?.into_iter().collect())
}

fn bitmap_key(u: &mut Unstructured) -> arbitrary::Result<BitmapKey> {
    let kind = |u: &mut Unstructured| {
        u.choose(&[
            EventKind::Ordered,
            EventKind::Messaged,
            EventKind::Clicked,
            EventKind::AbandonedCart,
        ])
        .copied()
    };
    let attr = |u: &mut Unstructured| {
        u.choose(&[
            NumberAttr::Spent,
            NumberAttr::OrderCount,
            NumberAttr::LifetimeSpend,
            NumberAttr::CartValue,
            NumberAttr::Created,
        ])
        .copied()
    };
    Ok(match u.int_in_range(0..=14)? {
        0 => BitmapKey::Live,
        1 => BitmapKey::OptedIn,
        2 => BitmapKey::EventAny(kind(u)?),
        3 => BitmapKey::EventDay(kind(u)?, i32::arbitrary(u)?),
        4 => BitmapKey::Tag(String::arbitrary(u)?),
        5 => BitmapKey::State(String::arbitrary(u)?),
        6 => BitmapKey::Timezone(String::arbitrary(u)?),
        7 => BitmapKey::KlaviyoList(String::arbitrary(u)?),
        8 => BitmapKey::Present(u8::arbitrary(u)?),
        9 => BitmapKey::Slice(attr(u)?, u8::arbitrary(u)?),
        10 => BitmapKey::Exists(attr(u)?),
        11 => BitmapKey::Answered {
            experience: String::arbitrary(u)?,
            question: String::arbitrary(u)?,
        },
        12 => BitmapKey::Answer {
            experience: String::arbitrary(u)?,
            question: String::arbitrary(u)?,
            answer: String::arbitrary(u)?,
        },
        13 => BitmapKey::ClickedBroadcast(String::arbitrary(u)?),
        _ => BitmapKey::ClickedBroadcastDay(String::arbitrary(u)?, i32::arbitrary(u)?),
    })
}
