//! One error type for the whole engine.
//!
//! Variants are grouped by what the caller can do about them: fix the input,
//! pick another name, retry, or nothing (our own faults). `service::status`
//! maps them to gRPC codes; our own faults reach the caller as a generic
//! `INTERNAL` message, with the details in the log.

use crate::rule::{ParseError, RuleError};

/// Everything that can go wrong in segmentd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: `field` names the request field, as a path (`events[3].time`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },

    /// A rule text that does not parse; `field` is where the text came from.
    #[error("{field}: {error}")]
    RuleSyntax { field: String, error: ParseError },

    /// A structured rule (or a parsed one) that breaks a rule constraint.
    #[error("{field}: {error}")]
    RuleInvalid { field: String, error: RuleError },

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    AlreadyExists(String),

    /// The current state refuses the change (a reference cycle, a segment still in use).
    #[error("{0}")]
    FailedPrecondition(String),

    /// A change based on a stale version.
    #[error("{0}")]
    Aborted(String),

    /// A position outside what is kept (a change-feed sequence pruned or
    /// not yet reached).
    #[error("{0}")]
    OutOfRange(String),

    /// The server cannot serve the call now (it is stopping); retry.
    #[error("{0}")]
    Unavailable(String),

    /// A documented limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),

    /// The call was answered (or its caller left) before the work was done.
    #[error("{0}")]
    Cancelled(String),

    /// The caller's deadline passed before the work was done.
    #[error("{0}")]
    DeadlineExceeded(String),

    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),

    /// Stored data that does not decode: the data directory is damaged.
    #[error("corrupt data: {0}")]
    Corrupt(String),

    /// A bug or an impossible state of our own.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the fault is ours rather than the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Storage(_) | Error::Corrupt(_) | Error::Internal(_)
        )
    }

    /// Bad input in the named request field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A convenient alias for results of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
