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

/// What a transport error usually means when TLS is involved: the two ends disagree on
/// TLS, or on the CA. (The errors themselves come from h2 and rustls.)
fn tls_hint(message: &str) -> Option<&'static str> {
    if message.contains("invalid peer certificate") || message.contains("UnknownIssuer") {
        Some(
            "the manager's certificate is not signed by the CA in --ca-file (CORRAL_CA_FILE), \
             or does not name the address dialled",
        )
    } else if message.contains("frame with invalid size") || message.contains("h2 protocol error") {
        Some(
            "the manager may speak TLS: write host:port instead of http:// and give the \
             cluster CA with --ca-file (CORRAL_CA_FILE)",
        )
    } else {
        None
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) | CliError::Failed(message) => formatter.write_str(message),
            CliError::Call(error) => {
                write!(formatter, "{error}")?;
                match tls_hint(error.message()) {
                    Some(hint) => write!(formatter, "\nhint: {hint}"),
                    None => Ok(()),
                }
            }
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
    fn tls_disagreements_come_with_a_hint() {
        let plaintext_to_tls = call(Status::internal(
            "h2 protocol error: http2 error: connection error detected: frame with invalid size",
        ));
        assert!(plaintext_to_tls
            .to_string()
            .contains("hint: the manager may speak TLS"));
        let other_ca = call(Status::unavailable(
            "https://127.0.0.1:1: invalid peer certificate: BadSignature",
        ));
        assert!(other_ca
            .to_string()
            .contains("hint: the manager's certificate"));
        assert!(!call(Status::not_found("job 3"))
            .to_string()
            .contains("hint"));
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
