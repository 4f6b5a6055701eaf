//! gRPC statuses: a state-machine `Rejection` or query error as a `tonic::Status` with
//! the code table of the API contract, and the `INVALID_ARGUMENT` status every
//! conversion check in this module answers with.

use corral_model::Rejection;
use corral_state::QueryError;
// The rejection's code (`Rejection::code()` or `compacted`) goes in this metadata key,
// so clients can branch on the reason without parsing the message.
use corral_wire::headers::REJECTION_HEADER;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The gRPC code of each rejection kind.
pub fn rejection_code(rejection: &Rejection) -> Code {
    match rejection {
        Rejection::InvalidArgument { .. } | Rejection::Overlap { .. } => Code::InvalidArgument,
        Rejection::NotFound { .. } => Code::NotFound,
        Rejection::PermissionDenied { .. } => Code::PermissionDenied,
        Rejection::Unauthenticated { .. } => Code::Unauthenticated,
        Rejection::AlreadyExists { .. } => Code::AlreadyExists,
        Rejection::LimitExceeded { .. } | Rejection::QuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        Rejection::InvalidState { .. }
        | Rejection::InsufficientNodes { .. }
        | Rejection::InUse { .. } => Code::FailedPrecondition,
    }
}

/// The status a client sees for a refused command: the contract's code, the
/// rejection's `Display` text, and `x-corral-rejection` = `rejection.code()`.
pub fn rejection_to_status(rejection: &Rejection) -> Status {
    with_reason(
        Status::new(rejection_code(rejection), rejection.to_string()),
        rejection.code(),
    )
}

/// `INVALID_ARGUMENT` for a malformed request field, worded like the state machine's
/// own `Rejection::InvalidArgument` ("invalid {field}: {reason}").
pub fn invalid_argument(field: &str, reason: impl Into<String>) -> Status {
    rejection_to_status(&Rejection::invalid(field, reason))
}

/// The status of a failed read query. Compacted events answer `OUT_OF_RANGE`.
pub fn query_error_to_status(error: &QueryError) -> Status {
    match error {
        QueryError::Rejected(rejection) => rejection_to_status(rejection),
        QueryError::Compacted { .. } => {
            with_reason(Status::out_of_range(error.to_string()), "compacted")
        }
    }
}

fn with_reason(mut status: Status, reason: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(REJECTION_HEADER, MetadataValue::from_static(reason));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(status: &Status) -> Option<&str> {
        status
            .metadata()
            .get(REJECTION_HEADER)
            .and_then(|value| value.to_str().ok())
    }

    #[test]
    fn code_table_of_the_contract() {
        let table = [
            (Rejection::invalid("name", "bad"), Code::InvalidArgument),
            (Rejection::not_found("pool", 3), Code::NotFound),
            (Rejection::denied("no"), Code::PermissionDenied),
            (Rejection::exists("pool", "a"), Code::AlreadyExists),
            (Rejection::limit("pools", 50), Code::ResourceExhausted),
            (
                Rejection::QuotaExceeded {
                    tenant: "tenant-1".into(),
                    dimension: "accelerators".into(),
                },
                Code::ResourceExhausted,
            ),
            (
                Rejection::state("pool", 1, "Frozen", "scale"),
                Code::FailedPrecondition,
            ),
            (
                Rejection::InsufficientNodes {
                    flavor: "gpu".into(),
                    zone: "zone-a".into(),
                    wanted: 3,
                    free: 1,
                },
                Code::FailedPrecondition,
            ),
            (
                Rejection::Overlap {
                    cidr: "192.168.0.0/24".into(),
                    other: "net".into(),
                },
                Code::InvalidArgument,
            ),
            (
                Rejection::in_use("network", 1, "pool-2"),
                Code::FailedPrecondition,
            ),
        ];
        for (rejection, code) in table {
            let status = rejection_to_status(&rejection);
            assert_eq!(status.code(), code, "{rejection:?}");
            assert_eq!(status.message(), rejection.to_string());
            assert_eq!(reason_of(&status), Some(rejection.code()));
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = invalid_argument("kind", "is unknown");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid kind: is unknown");
        assert_eq!(reason_of(&status), Some("invalid_argument"));
    }

    #[test]
    fn compacted_events_are_out_of_range() {
        let status = query_error_to_status(&QueryError::Compacted { oldest_index: 7 });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(reason_of(&status), Some("compacted"));
        let rejected = query_error_to_status(&QueryError::Rejected(Rejection::not_found("job", 1)));
        assert_eq!(rejected.code(), Code::NotFound);
    }
}
