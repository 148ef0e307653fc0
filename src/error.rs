//! One error type for the whole engine, and its single mapping to a gRPC status.
//!
//! Variants are grouped by what the caller can do about them: fix the input,
//! pick another name, retry, or nothing (our own faults). Our own faults reach
//! the caller as a generic `INTERNAL` message; the details go to the log.

use tonic::{Code, Status};

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

    /// A qualifier this build does not evaluate yet.
    #[error("{0}")]
    Unsupported(String),

    /// A documented limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),

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

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            Error::InvalidArgument { .. }
            | Error::RuleSyntax { .. }
            | Error::RuleInvalid { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Aborted(_) => Code::Aborted,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::Storage(_) | Error::Corrupt(_) | Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %error, "internal error");
            return Status::internal("internal error; the server log has the details");
        }
        Status::new(code, error.to_string())
    }
}
