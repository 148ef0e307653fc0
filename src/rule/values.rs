//! Value normalisation shared by the parser, the structured form and importers.
//!
//! RULES.md fixes one spelling per value so that equal rules render equally:
//! tags trimmed and lower-case, states as upper-case two-letter codes, time
//! zones in their IANA spelling and amounts as whole cents. The `Option`
//! helpers are public for the rest of the service; the `Result` ones name
//! what is wrong for [`super::RuleError`].

use std::collections::HashSet;

use chrono::{Datelike, NaiveDate};
use chrono_tz::{TZ_VARIANTS, Tz};

use super::ast::{Duration, DurationUnit, SetField, Window};
use super::error::RuleError;
use super::limits::{MAX_AMOUNT_CENTS, MAX_NUMBER_DIGITS};

/// US states, DC and the inhabited territories: code, then the names accepted for it.
const STATES: &[(&str, &[&str])] = &[
    ("AL", &["alabama"]),
    ("AK", &["alaska"]),
    ("AZ", &["arizona"]),
    ("AR", &["arkansas"]),
    ("CA", &["california"]),
    ("CO", &["colorado"]),
    ("CT", &["connecticut"]),
    ("DE", &["delaware"]),
    ("FL", &["florida"]),
    ("GA", &["georgia"]),
    ("HI", &["hawaii"]),
    ("ID", &["idaho"]),
    ("IL", &["illinois"]),
    ("IN", &["indiana"]),
    ("IA", &["iowa"]),
    ("KS", &["kansas"]),
    ("KY", &["kentucky"]),
    ("LA", &["louisiana"]),
    ("ME", &["maine"]),
    ("MD", &["maryland"]),
    ("MA", &["massachusetts"]),
    ("MI", &["michigan"]),
    ("MN", &["minnesota"]),
    ("MS", &["mississippi"]),
    ("MO", &["missouri"]),
    ("MT", &["montana"]),
    ("NE", &["nebraska"]),
    ("NV", &["nevada"]),
    ("NH", &["new hampshire"]),
    ("NJ", &["new jersey"]),
    ("NM", &["new mexico"]),
    ("NY", &["new york"]),
    ("NC", &["north carolina"]),
    ("ND", &["north dakota"]),
    ("OH", &["ohio"]),
    ("OK", &["oklahoma"]),
    ("OR", &["oregon"]),
    ("PA", &["pennsylvania"]),
    ("RI", &["rhode island"]),
    ("SC", &["south carolina"]),
    ("SD", &["south dakota"]),
    ("TN", &["tennessee"]),
    ("TX", &["texas"]),
    ("UT", &["utah"]),
    ("VT", &["vermont"]),
    ("VA", &["virginia"]),
    ("WA", &["washington"]),
    ("WV", &["west virginia"]),
    ("WI", &["wisconsin"]),
    ("WY", &["wyoming"]),
    (
        "DC",
        &["district of columbia", "washington dc", "washington d.c."],
    ),
    ("PR", &["puerto rico"]),
    ("GU", &["guam"]),
    (
        "VI",
        &[
            "virgin islands",
            "u.s. virgin islands",
            "us virgin islands",
            "united states virgin islands",
        ],
    ),
    ("AS", &["american samoa"]),
    ("MP", &["northern mariana islands"]),
];

/// A tag trimmed of white space and in lower case; `None` when nothing is left.
pub fn normalize_tag(tag: &str) -> Option<String> {
    let trimmed = tag.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.to_lowercase())
}

/// The upper-case two-letter code of a US state, DC or territory, given by
/// code or full name in any case; `None` for anything else.
pub fn normalize_state(state: &str) -> Option<&'static str> {
    let state = state.trim();
    STATES
        .iter()
        .find(|(code, names)| {
            code.eq_ignore_ascii_case(state)
                || names.iter().any(|name| name.eq_ignore_ascii_case(state))
        })
        .map(|(code, _)| *code)
}

/// The IANA spelling of a time zone name matched case-insensitively
/// (`america/chicago` gives `America/Chicago`); `None` for an unknown name.
pub fn normalize_time_zone(name: &str) -> Option<&'static str> {
    let name = name.trim();
    if let Ok(zone) = name.parse::<Tz>() {
        return Some(zone.name());
    }
    TZ_VARIANTS
        .iter()
        .find(|zone| zone.name().eq_ignore_ascii_case(name))
        .map(|zone| zone.name())
}

/// An amount written `49.99`, `100` or `0.5` (at most 12 digits before the
/// point, at most two after it) in cents, computed without floating point.
pub fn parse_amount_cents(text: &str) -> Option<u64> {
    parse_cents(text).ok()
}

/// Cents written as an amount with two decimals: `10000` gives `100.00`.
pub fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Why a number token was refused; the parser words the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberProblem {
    /// Not `digits [ "." digit [digit] ]` at all.
    NotANumber,
    /// More than [`MAX_NUMBER_DIGITS`] digits before the point.
    TooManyDigits,
    /// More than two digits after the point.
    TooManyDecimals,
    /// A point in an `order_count` operand.
    NotWhole,
}

/// Splits `12.34` into `("12", Some("34"))` after checking the shape and sizes.
fn split_number(text: &str) -> Result<(&str, Option<&str>), NumberProblem> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(NumberProblem::NotANumber);
    }
    if whole.len() > MAX_NUMBER_DIGITS {
        return Err(NumberProblem::TooManyDigits);
    }
    if fraction.is_some_and(|fraction| fraction.len() > 2) {
        return Err(NumberProblem::TooManyDecimals);
    }
    Ok((whole, fraction))
}

/// An amount in cents, with the reason when it is refused.
pub(crate) fn parse_cents(text: &str) -> Result<u64, NumberProblem> {
    let (whole, fraction) = split_number(text)?;
    let whole: u64 = whole.parse().map_err(|_| NumberProblem::NotANumber)?;
    let fraction = match fraction {
        None => 0,
        Some(digits) => {
            let value: u64 = digits.parse().map_err(|_| NumberProblem::NotANumber)?;
            if digits.len() == 1 { value * 10 } else { value }
        }
    };
    // At most 12 digits before the point, so this cannot overflow a u64.
    Ok(whole * 100 + fraction)
}

/// A whole count (`order_count`), with the reason when it is refused.
pub(crate) fn parse_count(text: &str) -> Result<u64, NumberProblem> {
    match split_number(text)? {
        (_, Some(_)) => Err(NumberProblem::NotWhole),
        (whole, None) => whole.parse().map_err(|_| NumberProblem::NotANumber),
    }
}

/// A duration token such as `12h`, `30d` or `2W`; `None` when it has another
/// shape or its amount does not fit. A zero amount is returned as is.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let unit_char = text.chars().last()?;
    let digits = text.get(..text.len() - unit_char.len_utf8())?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unit = match unit_char.to_ascii_lowercase() {
        'h' => DurationUnit::Hours,
        'd' => DurationUnit::Days,
        'w' => DurationUnit::Weeks,
        _ => return None,
    };
    let amount = digits.parse().ok()?;
    Some(Duration { amount, unit })
}

/// Whether `text` has the `YYYY-MM-DD` shape, whatever the numbers.
pub(crate) fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// The date written `YYYY-MM-DD`; `None` for another shape or a day that
/// does not exist (`2026-02-30`).
pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    if !looks_like_date(text) {
        return None;
    }
    let year = text.get(0..4)?.parse().ok()?;
    let month = text.get(5..7)?.parse().ok()?;
    let day = text.get(8..10)?.parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// A normalised value of a set qualifier.
pub(crate) fn set_value(field: SetField, raw: &str) -> Result<String, RuleError> {
    match field {
        SetField::Tag => {
            let tag = normalize_tag(raw).ok_or(RuleError::EmptyTag)?;
            text_value("tag", tag)
        }
        SetField::State => normalize_state(raw)
            .map(str::to_owned)
            .ok_or_else(|| RuleError::UnknownState(raw.to_owned())),
        SetField::Timezone => normalize_time_zone(raw)
            .map(str::to_owned)
            .ok_or_else(|| RuleError::UnknownTimeZone(raw.to_owned())),
        SetField::KlaviyoList => id_value("klaviyo list id", raw.to_owned()),
    }
}

/// An opaque id: kept exactly, but held to what a write accepts (not
/// empty, at most `MAX_ID_BYTES`, no control characters), so that a rule
/// cannot name an id no customer, list or segment can have.
pub(crate) fn id_value(what: &'static str, id: String) -> Result<String, RuleError> {
    if id.is_empty() {
        return Err(RuleError::EmptyId { what });
    }
    let id = text_value(what, id)?;
    if id.len() > super::limits::MAX_ID_BYTES {
        return Err(RuleError::IdTooLong { what });
    }
    if id.chars().any(char::is_control) {
        return Err(RuleError::IdControlCharacter { what });
    }
    Ok(id)
}

/// Any string value: kept exactly, refused if it holds a line break, which
/// a string of the text form cannot.
pub(crate) fn text_value(what: &'static str, text: String) -> Result<String, RuleError> {
    if text.contains(['\n', '\r']) {
        return Err(RuleError::LineBreak { what });
    }
    Ok(text)
}

/// Keeps the first of equal values, in the given order.
pub(crate) fn dedup_values(values: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(values.len());
    values
        .into_iter()
        .filter(|value| seen.insert(value.clone()))
        .collect()
}

/// A date the text form can write: years 0000 to 9999.
pub(crate) fn check_date(date: NaiveDate) -> Result<NaiveDate, RuleError> {
    if (0..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(RuleError::DateOutOfRange(date))
    }
}

/// A window with a positive duration, writable dates and ordered bounds.
pub(crate) fn check_window(window: Window) -> Result<Window, RuleError> {
    match window {
        Window::Within(duration) if duration.amount == 0 => Err(RuleError::ZeroDuration),
        Window::Within(_) => Ok(window),
        Window::Between(from, to) => {
            check_date(from)?;
            check_date(to)?;
            if from > to {
                return Err(RuleError::WindowOrder { from, to });
            }
            Ok(window)
        }
        Window::Since(date) | Window::Before(date) => check_date(date).map(|_| window),
    }
}

/// An amount the text form can write.
pub(crate) fn check_amount(cents: u64) -> Result<u64, RuleError> {
    if cents > MAX_AMOUNT_CENTS {
        return Err(RuleError::AmountTooLarge { cents });
    }
    Ok(cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_and_lower_cased() {
        assert_eq!(normalize_tag("  VIP \t"), Some("vip".to_owned()));
        assert_eq!(normalize_tag("Summer Sale"), Some("summer sale".to_owned()));
        assert_eq!(normalize_tag("ÉTÉ"), Some("été".to_owned()));
        assert_eq!(normalize_tag(" \n "), None);
        assert_eq!(normalize_tag(""), None);
    }

    #[test]
    fn states_accept_codes_and_names_in_any_case() {
        assert_eq!(normalize_state("CA"), Some("CA"));
        assert_eq!(normalize_state("ca"), Some("CA"));
        assert_eq!(normalize_state("California"), Some("CA"));
        assert_eq!(normalize_state("NEW YORK"), Some("NY"));
        assert_eq!(normalize_state("district of columbia"), Some("DC"));
        assert_eq!(normalize_state("Puerto Rico"), Some("PR"));
        assert_eq!(normalize_state("gu"), Some("GU"));
        assert_eq!(normalize_state("U.S. Virgin Islands"), Some("VI"));
        assert_eq!(normalize_state("American Samoa"), Some("AS"));
        assert_eq!(normalize_state("Northern Mariana Islands"), Some("MP"));
        assert_eq!(normalize_state(" wy "), Some("WY"));
    }

    #[test]
    fn unknown_states_are_refused() {
        assert_eq!(normalize_state("Calfornia"), None);
        assert_eq!(normalize_state("ZZ"), None);
        assert_eq!(normalize_state("Ontario"), None);
        assert_eq!(normalize_state(""), None);
    }

    #[test]
    fn fifty_states_dc_and_five_territories_are_known() {
        let codes: HashSet<&str> = STATES.iter().map(|(code, _)| *code).collect();
        assert_eq!(codes.len(), 56);
        assert_eq!(STATES.len(), 56);
    }

    #[test]
    fn time_zones_keep_their_iana_spelling() {
        assert_eq!(
            normalize_time_zone("America/Chicago"),
            Some("America/Chicago")
        );
        assert_eq!(
            normalize_time_zone("america/chicago"),
            Some("America/Chicago")
        );
        assert_eq!(
            normalize_time_zone("AMERICA/NEW_YORK"),
            Some("America/New_York")
        );
        assert_eq!(normalize_time_zone("utc"), Some("UTC"));
        assert_eq!(normalize_time_zone("Mars/Base"), None);
        assert_eq!(normalize_time_zone(""), None);
    }

    #[test]
    fn amounts_become_exact_cents() {
        assert_eq!(parse_amount_cents("49.99"), Some(4_999));
        assert_eq!(parse_amount_cents("100"), Some(10_000));
        assert_eq!(parse_amount_cents("0.5"), Some(50));
        assert_eq!(parse_amount_cents("0.05"), Some(5));
        assert_eq!(parse_amount_cents("007.10"), Some(710));
        assert_eq!(
            parse_amount_cents("999999999999.99"),
            Some(99_999_999_999_999)
        );
        assert_eq!(parse_amount_cents("0.07"), Some(7));
    }

    #[test]
    fn malformed_amounts_are_refused() {
        assert_eq!(parse_cents("1.234"), Err(NumberProblem::TooManyDecimals));
        assert_eq!(
            parse_cents("1234567890123"),
            Err(NumberProblem::TooManyDigits)
        );
        for text in ["", ".5", "5.", "1.2.3", "-1", "1e3", "12a", "1,5", "+1"] {
            assert_eq!(parse_cents(text), Err(NumberProblem::NotANumber), "{text}");
        }
    }

    #[test]
    fn counts_are_whole_numbers() {
        assert_eq!(parse_count("2"), Ok(2));
        assert_eq!(parse_count("999999999999"), Ok(999_999_999_999));
        assert_eq!(parse_count("2.0"), Err(NumberProblem::NotWhole));
        assert_eq!(parse_count("x"), Err(NumberProblem::NotANumber));
    }

    #[test]
    fn cents_are_written_with_two_decimals() {
        assert_eq!(format_cents(10_000), "100.00");
        assert_eq!(format_cents(4_999), "49.99");
        assert_eq!(format_cents(50), "0.50");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(99_999_999_999_999), "999999999999.99");
    }

    #[test]
    fn durations_keep_their_unit() {
        let days = |amount| {
            Some(Duration {
                amount,
                unit: DurationUnit::Days,
            })
        };
        assert_eq!(parse_duration("30d"), days(30));
        assert_eq!(parse_duration("30D"), days(30));
        assert_eq!(parse_duration("007d"), days(7));
        assert_eq!(
            parse_duration("2w"),
            Some(Duration {
                amount: 2,
                unit: DurationUnit::Weeks
            })
        );
        assert_eq!(
            parse_duration("12H"),
            Some(Duration {
                amount: 12,
                unit: DurationUnit::Hours
            })
        );
        assert_eq!(parse_duration("0d"), days(0));
        for text in ["d", "30", "30m", "3.5d", "99999999999d", "é", ""] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn dates_must_exist() {
        assert_eq!(
            parse_date("2026-03-01"),
            NaiveDate::from_ymd_opt(2026, 3, 1)
        );
        assert_eq!(
            parse_date("2024-02-29"),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("2026-3-01"), None);
        assert!(looks_like_date("2026-02-30"));
        assert!(!looks_like_date("2026/02/03"));
    }

    #[test]
    fn in_lists_keep_the_first_of_repeats() {
        let values = ["b", "a", "b", "c", "a"].map(str::to_owned).to_vec();
        assert_eq!(dedup_values(values), ["b", "a", "c"]);
    }

    #[test]
    fn ids_must_be_non_empty_and_on_one_line() {
        assert_eq!(
            id_value("segment id", "Seg 1".to_owned()),
            Ok("Seg 1".to_owned())
        );
        assert_eq!(
            id_value("segment id", String::new()),
            Err(RuleError::EmptyId { what: "segment id" })
        );
        assert_eq!(
            id_value("segment id", "a\nb".to_owned()),
            Err(RuleError::LineBreak { what: "segment id" })
        );
    }
}
