//! Segment rules: the tree, its text form and the checks every rule passes.
//!
//! RULES.md is the contract. [`parse()`] reads the text form into a normalised
//! [`Rule`], whose `Display` writes the canonical text back; [`normalize()`]
//! brings a tree built from the structured form to the same shape. Both
//! refuse what the contract refuses: unknown values, empty groups and rules
//! beyond the `MAX_*` limits.

pub mod ast;
mod canonical;
mod error;
mod lexer;
mod limits;
mod normalize;
mod parse;
pub mod values;

pub use ast::*;
pub use error::{ParseError, RuleError};
pub use limits::{
    MAX_AMOUNT_CENTS, MAX_ID_BYTES, MAX_IN_VALUES, MAX_NUMBER_DIGITS, MAX_ORDER_COUNT,
    MAX_RULE_DEPTH, MAX_RULE_NODES, MAX_RULE_TEXT_BYTES, check_limits,
};
pub use normalize::normalize;
pub use parse::parse;

#[cfg(test)]
mod examples {
    use super::parse;

    /// Every example of RULES.md, with its canonical text written out by hand.
    const EXAMPLES: [(&str, &str); 8] = [
        (
            "opted_in AND NOT messaged WITHIN 7d",
            "opted_in AND NOT messaged WITHIN 7d",
        ),
        (
            r#"tag = "vip" OR state IN ("CA", "New York")"#,
            r#"tag = "vip" OR state IN ("CA", "NY")"#,
        ),
        (
            "ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 100",
            "ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 100.00",
        ),
        (
            "abandoned_cart WITHIN 24h AND abandoned_cart_value > 20 AND opted_in",
            "abandoned_cart WITHIN 24h AND abandoned_cart_value > 20.00 AND opted_in",
        ),
        (
            r#"answered("fit-quiz", "size", "Medium") AND NOT ordered WITHIN 30d"#,
            r#"answered("fit-quiz", "size", "Medium") AND NOT ordered WITHIN 30d"#,
        ),
        (
            r#"klaviyo_list = "Xy12ab" AND NOT segment = "recent-buyers""#,
            r#"klaviyo_list = "Xy12ab" AND NOT segment = "recent-buyers""#,
        ),
        (
            r#"created SINCE 2026-01-01 AND timezone = "America/Chicago""#,
            r#"created SINCE 2026-01-01 AND timezone = "America/Chicago""#,
        ),
        (
            "lifetime_spend BETWEEN 50 AND 250 AND order_count >= 2",
            "lifetime_spend BETWEEN 50.00 AND 250.00 AND order_count >= 2",
        ),
    ];

    #[test]
    fn every_example_of_the_rules_contract_parses_to_its_canonical_text() {
        for (text, canonical) in EXAMPLES {
            let rule = parse(text).unwrap_or_else(|error| panic!("`{text}`: {error}"));
            assert_eq!(rule.to_string(), canonical, "canonical text of `{text}`");
            assert_eq!(parse(canonical).unwrap(), rule, "re-parsing `{canonical}`");
        }
    }
}
