//! The single mapping from the engine's errors to gRPC statuses (AIP-193).

use tonic::{Code, Status};

use crate::error::Error;

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
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Unavailable(_) => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Cancelled(_) => Code::Cancelled,
            Error::Storage(_) | Error::Corrupt(_) | Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            // The details are logged by the caller; the client learns only that it was us.
            return Status::internal("internal error; the server log has the details");
        }
        Status::new(code, error.to_string())
    }
}
