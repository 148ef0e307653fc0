//! The documented limits on a rule, and the check that a tree stays within them.
//!
//! Every rule, whether parsed from text or built from the structured form, is
//! refused when it is nested too deeply, has too many nodes or carries an
//! oversized `IN` list. The check walks the tree with an explicit stack, so a
//! tree of any depth is refused without recursion.

use super::ast::{Predicate, Rule};
use super::error::RuleError;

/// The longest id (customer, list, segment, broadcast, ...), in bytes,
/// in a rule as in a write.
pub const MAX_ID_BYTES: usize = 256;

/// The longest rule text accepted, in bytes.
pub const MAX_RULE_TEXT_BYTES: usize = 65_536;

/// The deepest rule accepted: a lone qualifier has depth 1, and every
/// `AND`, `OR` or `NOT` above it adds one level.
pub const MAX_RULE_DEPTH: usize = 32;

/// The most nodes a rule may have, qualifiers and operators together.
pub const MAX_RULE_NODES: usize = 1_000;

/// The most distinct values one `IN` list may hold (after normalisation).
pub const MAX_IN_VALUES: usize = 10_000;

/// The most digits a number may have before its decimal point.
pub const MAX_NUMBER_DIGITS: usize = 12;

/// The largest amount, in cents, that the text form can write (`999999999999.99`).
pub const MAX_AMOUNT_CENTS: u64 = 99_999_999_999_999;

/// The largest `order_count` operand that the text form can write.
pub const MAX_ORDER_COUNT: u64 = 999_999_999_999;

/// Checks depth, node count and `IN` list sizes against the limits above.
///
/// It does not check values or the shape of groups; [`super::normalize()`]
/// does both, and calls this too.
pub fn check_limits(rule: &Rule) -> Result<(), RuleError> {
    let mut pending = vec![(rule, 1_usize)];
    let mut nodes = 0_usize;

    while let Some((rule, depth)) = pending.pop() {
        nodes += 1;
        if nodes > MAX_RULE_NODES {
            return Err(RuleError::TooManyNodes);
        }
        if depth > MAX_RULE_DEPTH {
            return Err(RuleError::TooDeep);
        }

        match rule {
            Rule::And(children) | Rule::Or(children) => {
                pending.extend(children.iter().map(|child| (child, depth + 1)));
            }
            Rule::Not(child) => pending.push((child, depth + 1)),
            Rule::Predicate(Predicate::Set { field, values }) => {
                if values.len() > MAX_IN_VALUES {
                    return Err(RuleError::TooManyValues {
                        qualifier: super::canonical::set_field_name(*field),
                    });
                }
            }
            Rule::Predicate(Predicate::Customers(ids)) => {
                if ids.len() > MAX_IN_VALUES {
                    return Err(RuleError::TooManyValues {
                        qualifier: "customer",
                    });
                }
            }
            Rule::Predicate(_) => {}
        }
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::ast::SetField;
    use super::*;

    fn opted_in() -> Rule {
        Rule::Predicate(Predicate::OptedIn)
    }

    fn nots(count: usize) -> Rule {
        let mut rule = opted_in();
        for _ in 0..count {
            rule = Rule::Not(Box::new(rule));
        }
        rule
    }

    /// Takes a `NOT` chain apart one link at a time, so that a chain too deep
    /// for the default recursive drop is freed safely.
    fn dismantle(mut rule: Rule) {
        while let Rule::Not(child) = rule {
            rule = *child;
        }
    }

    fn numbered(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("v{index}")).collect()
    }

    #[test]
    fn thirty_two_levels_pass_and_thirty_three_do_not() {
        assert_eq!(check_limits(&nots(31)), Ok(()));
        assert_eq!(check_limits(&nots(32)), Err(RuleError::TooDeep));
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_without_recursion() {
        let rule = nots(100_000);
        assert_eq!(check_limits(&rule), Err(RuleError::TooDeep));
        dismantle(rule);
    }

    #[test]
    fn a_thousand_nodes_pass_and_one_more_does_not() {
        let rule = Rule::Or(vec![opted_in(); 999]);
        assert_eq!(check_limits(&rule), Ok(()));
        let rule = Rule::Or(vec![opted_in(); 1_000]);
        assert_eq!(check_limits(&rule), Err(RuleError::TooManyNodes));
    }

    #[test]
    fn in_lists_hold_at_most_ten_thousand_values() {
        let set = |count| {
            Rule::Predicate(Predicate::Set {
                field: SetField::KlaviyoList,
                values: numbered(count),
            })
        };
        assert_eq!(check_limits(&set(10_000)), Ok(()));
        assert_eq!(
            check_limits(&set(10_001)),
            Err(RuleError::TooManyValues {
                qualifier: "klaviyo_list"
            })
        );
        let customers = Rule::Predicate(Predicate::Customers(numbered(10_001)));
        assert_eq!(
            check_limits(&customers),
            Err(RuleError::TooManyValues {
                qualifier: "customer"
            })
        );
    }

    #[test]
    fn limit_errors_name_the_limit() {
        assert_eq!(
            RuleError::TooDeep.to_string(),
            "rule is nested deeper than 32 levels"
        );
        assert_eq!(
            RuleError::TooManyNodes.to_string(),
            "rule has more than 1000 qualifiers and operators"
        );
        assert_eq!(
            RuleError::TooManyValues { qualifier: "tag" }.to_string(),
            "`tag IN` list has more than 10000 values"
        );
    }
}
