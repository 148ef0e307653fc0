//! The structured rule of the protobuf API, decoded with prost from
//! arbitrary bytes and converted with `service::rules::from_proto`.
//!
//! The first byte wraps the decoded rule in that many more `NOT`, one-child
//! `AND` or one-child `OR` levels (the second byte picks which, two bits a
//! level), so trees reach past prost's own nesting limit of 100; the rest
//! of the input is the encoded `segmentd.v1.Rule`. 255 levels at most keep
//! the harness's own recursive drop of the tree within the stack.
//!
//! A conversion either refuses the rule as the caller's mistake, or gives a
//! normalised tree within the limits whose canonical text and structured
//! form both come back as the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use segmentd::Error;
use segmentd::proto;
use segmentd::rule;
use segmentd::service::rules;

fuzz_target!(|data: &[u8]| {
    let (levels, kinds, encoded) = match data {
        [levels, kinds, encoded @ ..] => (*levels, *kinds, encoded),
        _ => (0, 0, data),
    };
    let Ok(mut message) = proto::Rule::decode(encoded) else {
        return;
    };
    for level in 0..levels {
        message = wrap(message, kinds >> (2 * (level % 4)));
    }

    let rule = match rules::from_proto(message, "rule") {
        Ok(rule) => rule,
        Err(error) => {
            assert!(
                matches!(
                    error,
                    Error::InvalidArgument { .. } | Error::RuleInvalid { .. }
                ),
                "not the caller's mistake: {error:?}"
            );
            assert!(error.to_string().starts_with("rule"), "field of `{error}`");
            return;
        }
    };

    assert_eq!(rule::check_limits(&rule), Ok(()), "limits of {rule:?}");
    assert_eq!(
        rule::normalize(rule.clone()).as_ref(),
        Ok(&rule),
        "normalising again"
    );

    let canonical = rule.to_string();
    let reparsed = rule::parse(&canonical)
        .unwrap_or_else(|error| panic!("canonical text `{canonical}` of {rule:?}: {error}"));
    assert_eq!(reparsed, rule, "re-parsing `{canonical}`");

    let converted = rules::from_proto(rules::to_proto(&rule), "rule")
        .unwrap_or_else(|error| panic!("structured form of `{canonical}`: {error}"));
    assert_eq!(converted, rule, "structured form of `{canonical}`");
});

/// One more level above `rule`: `NOT`, or an `AND` or `OR` of one child,
/// by the low two bits of `kind`.
fn wrap(rule: proto::Rule, kind: u8) -> proto::Rule {
    use proto::rule::Node;

    let only = |rule| proto::RuleList { rules: vec![rule] };
    let node = match kind & 0b11 {
        0 | 1 => Node::Not(Box::new(rule)),
        2 => Node::And(only(rule)),
        _ => Node::Or(only(rule)),
    };
    proto::Rule { node: Some(node) }
}
