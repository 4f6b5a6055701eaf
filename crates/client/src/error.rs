//! [`ClientError`]: a failed call, keeping the gRPC status code and message.

use std::fmt;
use tonic::{Code, Status};

/// Why a call failed: the gRPC status code and message of the last attempt, plus the
/// server's rejection code (`x-corral-rejection` metadata) when it sent one.
///
/// Displays as one line, `<code in words>: <message>`, e.g.
/// `not found: job job-42 not found`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    code: Code,
    message: String,
    rejection: Option<String>,
}

impl ClientError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
            rejection: None,
        }
    }

    /// A locally detected bad argument (e.g. an unparsable address).
    pub fn invalid_argument(message: impl Into<String>) -> ClientError {
        ClientError::new(Code::InvalidArgument, message)
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message, without the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The state machine's rejection code (e.g. `NotFound`, `QuotaExceeded`), when the
    /// server named one.
    pub fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }

    /// Whether the error means the replica could not be reached or cannot serve the
    /// call right now (worth trying another replica).
    pub fn is_unavailable(&self) -> bool {
        self.code == Code::Unavailable
    }

    /// As `From<&Status>`, naming the replica asked when it could not serve the call
    /// (unreachable, or `Unavailable` without naming a leader).
    pub(crate) fn from_status_at(status: &Status, address: &str) -> ClientError {
        let mut error = ClientError::from(status);
        if is_connection_failure(status)
            || (status.code() == Code::Unavailable && leader_of(status).is_none())
        {
            error.code = Code::Unavailable;
            error.message = format!("{address}: {}", error.message);
        }
        error
    }
}

/// The leader address a replica named in `x-corral-leader` metadata, if any. A replica
/// that says it cannot serve (`x-corral-unhealthy`: its storage failed, or it leads
/// without a quorum) is never believed about who leads.
pub(crate) fn leader_of(status: &Status) -> Option<String> {
    if status
        .metadata()
        .contains_key(corral_wire::headers::UNHEALTHY_HEADER)
    {
        return None;
    }
    status
        .metadata()
        .get(corral_wire::headers::LEADER_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

/// Whether a status is the client's own report of failing to reach a replica (tonic
/// reports some of those as `Unknown`) rather than an answer from one.
pub(crate) fn is_connection_failure(status: &Status) -> bool {
    let message = status.message();
    match status.code() {
        Code::Unavailable => leader_of(status).is_none(),
        Code::Unknown => {
            message.starts_with("Service was not ready") || message.contains("transport error")
        }
        _ => false,
    }
}

/// The code in words, lower case, as in `not found`.
pub(crate) fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

impl From<&Status> for ClientError {
    fn from(status: &Status) -> ClientError {
        let mut message = status.message().trim().to_string();
        // Transport failures often carry the useful part ("Connection refused") only in
        // the source chain.
        let mut source = std::error::Error::source(status);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !message.contains(&text) {
                if message.is_empty() {
                    message = text;
                } else {
                    message = format!("{message}: {text}");
                }
            }
            source = cause.source();
        }
        if message.is_empty() {
            message = "no details given".to_string();
        }
        let rejection = status
            .metadata()
            .get(corral_wire::headers::REJECTION_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        ClientError {
            code: status.code(),
            message: message.replace('\n', " "),
            rejection,
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> ClientError {
        ClientError::from(&status)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", code_words(self.code), self.message)
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_the_code_in_words_and_the_message() {
        let error = ClientError::from(Status::not_found("job job-42 not found"));
        assert_eq!(error.to_string(), "not found: job job-42 not found");
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.rejection(), None);
    }

    #[test]
    fn keeps_the_rejection_code() {
        let mut status = Status::resource_exhausted("quota exceeded");
        status.metadata_mut().insert(
            corral_wire::headers::REJECTION_HEADER,
            "QuotaExceeded".parse().unwrap(),
        );
        let error = ClientError::from(status);
        assert_eq!(error.rejection(), Some("QuotaExceeded"));
        assert_eq!(error.to_string(), "resource exhausted: quota exceeded");
    }

    #[test]
    fn an_empty_message_still_says_something_and_stays_on_one_line() {
        assert_eq!(
            ClientError::from(Status::internal("")).to_string(),
            "internal error: no details given"
        );
        assert_eq!(ClientError::from(Status::internal("a\nb")).message(), "a b");
    }

    #[test]
    fn connection_failures_name_the_address() {
        let status = Status::unavailable("tcp connect error");
        let error = ClientError::from_status_at(&status, "http://a:1");
        assert_eq!(
            error.to_string(),
            "unavailable: http://a:1: tcp connect error"
        );
        let not_ready = Status::unknown("Service was not ready: transport error");
        assert_eq!(
            ClientError::from_status_at(&not_ready, "http://a:1").code(),
            Code::Unavailable
        );
        let mut redirect = Status::unavailable("not the leader");
        redirect
            .metadata_mut()
            .insert(corral_wire::headers::LEADER_HEADER, "b:2".parse().unwrap());
        assert!(!is_connection_failure(&redirect));
    }

    #[test]
    fn an_unhealthy_replica_is_not_believed_about_the_leader() {
        let mut status = Status::unavailable("raft storage failed");
        let metadata = status.metadata_mut();
        metadata.insert(corral_wire::headers::LEADER_HEADER, "b:2".parse().unwrap());
        assert_eq!(leader_of(&status).as_deref(), Some("b:2"));
        status.metadata_mut().insert(
            corral_wire::headers::UNHEALTHY_HEADER,
            "true".parse().unwrap(),
        );
        assert_eq!(leader_of(&status), None);
        assert!(is_connection_failure(&status), "the next replica is tried");
    }
}
