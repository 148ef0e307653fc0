//! Page tokens (`service::token`), from arbitrary bytes.
//!
//! The input is a fingerprint (8 bytes, big-endian), an audience position
//! (`after`, 4 bytes, and `instant`, 8 bytes, big-endian) and then a token
//! (the rest, lossily as UTF-8). Missing header bytes count as zero.
//!
//! Decoding a token never panics; a token that decodes was issued for that
//! fingerprint alone and is the very text that encoding its position gives
//! (base64 without padding has one spelling). A position the server can
//! issue (its instant within the years `as_of` takes) and the token's text
//! as a listing's last id, encoded, decode back to themselves; a position
//! outside those years may instead be refused as the caller's mistake.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segmentd::service::token::{
    AudiencePosition, decode_audience, decode_listing, encode_audience, encode_listing,
};

/// The last evaluation instant the API takes, the end of year 9999, as
/// `service::convert` has it.
const MAX_SECONDS: i64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    let mut header = [0_u8; 20];
    let split = data.len().min(header.len());
    header[..split].copy_from_slice(&data[..split]);
    let fingerprint = u64::from_be_bytes(header[..8].try_into().unwrap());
    let position = AudiencePosition {
        after: u32::from_be_bytes(header[8..12].try_into().unwrap()),
        instant: i64::from_be_bytes(header[12..20].try_into().unwrap()),
    };
    let token = String::from_utf8_lossy(&data[split..]);

    check_decoding(&token, fingerprint);
    check_round_trips(fingerprint, position, &token);
});

fn check_decoding(token: &str, fingerprint: u64) {
    let other = fingerprint ^ 1;

    match decode_audience(token, fingerprint) {
        Ok(None) => assert!(token.is_empty(), "`{token}` read as no token"),
        Ok(Some(position)) => {
            assert_eq!(
                encode_audience(fingerprint, position),
                token,
                "{position:?}"
            );
            assert!(
                decode_audience(token, other).is_err(),
                "`{token}` for another"
            );
        }
        Err(error) => assert!(!error.is_internal(), "`{token}`: {error:?}"),
    }

    match decode_listing(token, fingerprint) {
        Ok(None) => assert!(token.is_empty(), "`{token}` read as no token"),
        Ok(Some(last)) => {
            assert_eq!(encode_listing(fingerprint, &last), token, "after `{last}`");
            assert!(
                decode_listing(token, other).is_err(),
                "`{token}` for another"
            );
        }
        Err(error) => assert!(!error.is_internal(), "`{token}`: {error:?}"),
    }
}

fn check_round_trips(fingerprint: u64, position: AudiencePosition, last: &str) {
    let token = encode_audience(fingerprint, position);
    assert!(!token.is_empty());
    match decode_audience(&token, fingerprint) {
        Ok(decoded) => assert_eq!(decoded, Some(position)),
        Err(error) => {
            let issued = (0..=MAX_SECONDS).contains(&position.instant);
            assert!(!issued && !error.is_internal(), "{position:?}: {error:?}");
        }
    }
    assert!(decode_listing(&token, fingerprint ^ 1).is_err());

    let issued = AudiencePosition {
        instant: position.instant.rem_euclid(MAX_SECONDS + 1),
        ..position
    };
    let token = encode_audience(fingerprint, issued);
    assert_eq!(decode_audience(&token, fingerprint).unwrap(), Some(issued));

    let token = encode_listing(fingerprint, last);
    assert_eq!(
        decode_listing(&token, fingerprint).unwrap().as_deref(),
        Some(last)
    );
}
