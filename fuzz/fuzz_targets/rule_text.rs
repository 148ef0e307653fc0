//! The text form of a rule, from arbitrary bytes (read as UTF-8, or
//! converted lossily when they are not).
//!
//! A text either is refused with a position inside the text, or parses to a
//! tree that is already normalised and within the limits, whose canonical
//! text parses back to the same tree and renders to the same text again
//! (RULES.md, "The text form"), and whose structured form converts back to
//! the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segmentd::rule::{self, Rule};
use segmentd::service::rules;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rule = match rule::parse(&text) {
        Ok(rule) => rule,
        Err(error) => {
            check_position(&text, error.line, error.column);
            return;
        }
    };

    check_parsed(&text, &rule);
});

/// A 1-based line and column must name a character of `text`, or the
/// place just past the end of a line. `\r\n`, `\n` and a lone `\r` each
/// end a line, and columns count characters.
fn check_position(text: &str, line: usize, column: usize) {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = unified.split('\n').collect();
    assert!(line >= 1 && column >= 1, "line {line}, column {column}");
    let Some(named) = lines.get(line - 1) else {
        panic!("line {line} is past the {} lines of {text:?}", lines.len());
    };
    let width = named.chars().count();
    assert!(
        column <= width + 1,
        "column {column} is past the {width} characters of line {line} of {text:?}"
    );
}

fn check_parsed(text: &str, rule: &Rule) {
    assert_eq!(rule::check_limits(rule), Ok(()), "limits of `{text}`");
    assert_eq!(
        rule::normalize(rule.clone()).as_ref(),
        Ok(rule),
        "normalising the parse of `{text}`"
    );

    let canonical = rule.to_string();
    let reparsed = rule::parse(&canonical)
        .unwrap_or_else(|error| panic!("canonical text `{canonical}` of `{text}`: {error}"));
    assert_eq!(&reparsed, rule, "re-parsing `{canonical}` (from `{text}`)");
    assert_eq!(
        reparsed.to_string(),
        canonical,
        "rendering `{canonical}` again"
    );

    let structured = rules::to_proto(rule);
    let converted = rules::from_proto(structured, "rule")
        .unwrap_or_else(|error| panic!("structured form of `{canonical}`: {error}"));
    assert_eq!(&converted, rule, "structured form of `{canonical}`");
}
