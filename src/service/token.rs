//! Opaque page tokens (AIP-158): where the next page starts, bound to the
//! tenant and audience that issued it, so a token cannot be replayed
//! against another audience.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

const VERSION: u8 = 1;

/// A 64-bit FNV-1a hash of the parts, each followed by a separator.
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Encodes the position `after` (a dense id) for audience `fingerprint`.
pub fn encode(fingerprint: u64, after: u32) -> String {
    let mut bytes = Vec::with_capacity(13);
    bytes.push(VERSION);
    bytes.extend_from_slice(&fingerprint.to_be_bytes());
    bytes.extend_from_slice(&after.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token issued for `fingerprint`; `None` for an empty token.
pub fn decode(token: &str, fingerprint: u64, field: &str) -> Result<Option<u32>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid(field, "not a page token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() != 13 || bytes[0] != VERSION {
        return Err(invalid());
    }
    let issued_for = u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| invalid())?);
    if issued_for != fingerprint {
        return Err(Error::invalid(
            field,
            "the page token belongs to another tenant or audience",
        ));
    }
    let after = u32::from_be_bytes(bytes[9..13].try_into().map_err(|_| invalid())?);
    Ok(Some(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_for_its_own_audience_only() {
        let mine = fingerprint(&["shop", "rule", "opted_in"]);
        let other = fingerprint(&["shop", "rule", "NOT opted_in"]);
        let token = encode(mine, 41);
        assert_eq!(decode(&token, mine, "page_token").unwrap(), Some(41));
        assert!(decode(&token, other, "page_token").is_err());
        assert!(decode("garbage!", mine, "page_token").is_err());
        assert_eq!(decode("", mine, "page_token").unwrap(), None);
    }

    #[test]
    fn fingerprint_separates_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
