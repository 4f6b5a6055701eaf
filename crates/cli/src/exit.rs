//! [`CliError`] and the process exit codes (documented in `corral --help`).

use corral_client::ClientError;
use std::fmt;
use tonic::Code;

pub const SUCCESS: i32 = 0;
pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const UNAUTHENTICATED: i32 = 3;
pub const PERMISSION_DENIED: i32 = 4;
pub const NOT_FOUND: i32 = 5;
pub const UNREACHABLE: i32 = 6;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Bad input found before calling anything (flags, files, addresses).
    Usage(String),
    /// A call to the cluster failed.
    Call(ClientError),
    /// Anything else (a server that stopped with an error, an output error, ...).
    Failed(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage(message.into())
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::Failed(message.into())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => USAGE,
            CliError::Failed(_) => FAILURE,
            CliError::Call(error) => match error.code() {
                Code::Unauthenticated => UNAUTHENTICATED,
                Code::PermissionDenied => PERMISSION_DENIED,
                Code::NotFound => NOT_FOUND,
                Code::Unavailable | Code::DeadlineExceeded => UNREACHABLE,
                _ => FAILURE,
            },
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        CliError::Call(error)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) | CliError::Failed(message) => formatter.write_str(message),
            CliError::Call(error) => write!(formatter, "{error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    fn call(status: Status) -> CliError {
        CliError::Call(ClientError::from(status))
    }

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::failed("x").exit_code(), 1);
        assert_eq!(call(Status::unauthenticated("no token")).exit_code(), 3);
        assert_eq!(call(Status::permission_denied("not yours")).exit_code(), 4);
        assert_eq!(
            call(Status::not_found("job job-42 not found")).exit_code(),
            5
        );
        assert_eq!(call(Status::unavailable("down")).exit_code(), 6);
        assert_eq!(call(Status::deadline_exceeded("slow")).exit_code(), 6);
        assert_eq!(call(Status::invalid_argument("bad")).exit_code(), 1);
        assert_eq!(call(Status::resource_exhausted("quota")).exit_code(), 1);
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(
            call(Status::not_found("job job-42 not found")).to_string(),
            "not found: job job-42 not found"
        );
        assert_eq!(CliError::usage("bad --flavor").to_string(), "bad --flavor");
    }
}
