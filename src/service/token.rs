//! Opaque page tokens (AIP-158). A token names where the next page starts
//! and is sealed with a fingerprint of the tenant and listing that issued
//! it, so a token cannot be replayed against another audience or tenant.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::time::Seconds;

const VERSION: u8 = 1;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A 64-bit FNV-1a hash of the parts, each followed by a separator.
pub fn fingerprint(parts: &[&str]) -> u64 {
    parts.iter().fold(FNV_OFFSET, |hash, part| {
        fnv1a_from(fnv1a_from(hash, part.as_bytes()), &[0xff])
    })
}

/// The 64-bit FNV-1a hash of some bytes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

fn fnv1a_from(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Where the next page of an audience starts: after dense id `after`,
/// evaluated at the same `instant` as the first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudiencePosition {
    pub after: u32,
    pub instant: Seconds,
}

pub fn encode_audience(fingerprint: u64, position: AudiencePosition) -> String {
    let mut payload = position.after.to_be_bytes().to_vec();
    payload.extend_from_slice(&position.instant.to_be_bytes());
    seal(fingerprint, &payload)
}

/// The position in a token issued for `fingerprint`; `None` for no token.
pub fn decode_audience(token: &str, fingerprint: u64) -> Result<Option<AudiencePosition>> {
    let Some(payload) = open(token, fingerprint)? else {
        return Ok(None);
    };
    let (after, instant) = payload.split_at_checked(4).ok_or_else(malformed)?;
    let instant = i64::from_be_bytes(instant.try_into().map_err(|_| malformed())?);
    // The seal is no secret: a caller can rewrite a token, so its instant
    // is held to the range `as_of` is.
    if !(0..=super::convert::MAX_SECONDS).contains(&instant) {
        return Err(malformed());
    }
    Ok(Some(AudiencePosition {
        after: u32::from_be_bytes(after.try_into().map_err(|_| malformed())?),
        instant,
    }))
}

/// A segment listing continues after segment id `last`.
pub fn encode_listing(fingerprint: u64, last: &str) -> String {
    seal(fingerprint, last.as_bytes())
}

pub fn decode_listing(token: &str, fingerprint: u64) -> Result<Option<String>> {
    match open(token, fingerprint)? {
        Some(payload) => String::from_utf8(payload)
            .map(Some)
            .map_err(|_| malformed()),
        None => Ok(None),
    }
}

fn seal(fingerprint: u64, payload: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&fingerprint.to_be_bytes());
    bytes.extend_from_slice(payload);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn open(token: &str, fingerprint: u64) -> Result<Option<Vec<u8>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    if bytes.len() < 9 || bytes[0] != VERSION {
        return Err(malformed());
    }
    if bytes[1..9] != fingerprint.to_be_bytes() {
        return Err(Error::invalid(
            "page_token",
            "the page token belongs to another tenant or listing",
        ));
    }
    Ok(Some(bytes[9..].to_vec()))
}

fn malformed() -> Error {
    Error::invalid("page_token", "not a page token this server issued")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audience_token_round_trips_for_its_own_audience_only() {
        let mine = fingerprint(&["shop", "rule", "opted_in"]);
        let other = fingerprint(&["shop", "rule", "NOT opted_in"]);
        let position = AudiencePosition {
            after: 41,
            instant: 1_700_000_000,
        };
        let token = encode_audience(mine, position);
        assert_eq!(decode_audience(&token, mine).unwrap(), Some(position));
        assert!(decode_audience(&token, other).is_err());
        assert!(decode_audience("garbage!", mine).is_err());
        assert!(decode_audience(&token[..token.len() - 2], mine).is_err());
        assert_eq!(decode_audience("", mine).unwrap(), None);
        // A rewritten instant outside the years `as_of` takes is refused.
        for instant in [-1, i64::MIN, i64::MAX, 253_402_300_800] {
            let forged = encode_audience(mine, AudiencePosition { after: 7, instant });
            assert!(decode_audience(&forged, mine).is_err(), "{instant}");
        }
    }

    #[test]
    fn a_listing_token_round_trips() {
        let key = fingerprint(&["shop", "segments"]);
        let token = encode_listing(key, "west-vips");
        assert_eq!(
            decode_listing(&token, key).unwrap().as_deref(),
            Some("west-vips")
        );
        assert!(decode_listing(&token, key ^ 1).is_err());
    }

    #[test]
    fn fingerprint_separates_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
