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
    MAX_AMOUNT_CENTS, MAX_IN_VALUES, MAX_NUMBER_DIGITS, MAX_ORDER_COUNT, MAX_RULE_DEPTH,
    MAX_RULE_NODES, MAX_RULE_TEXT_BYTES, check_limits,
};
pub use normalize::normalize;
pub use parse::parse;
