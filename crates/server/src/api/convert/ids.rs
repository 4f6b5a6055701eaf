//! Object ids in requests, where 0 (the protobuf default) means "not set".

use super::status::invalid_argument;
use tonic::Status;

/// `None` for 0, otherwise the typed id: `optional_id(request.pool, PoolId)`.
pub fn optional_id<Id>(value: u64, make: fn(u64) -> Id) -> Option<Id> {
    (value != 0).then(|| make(value))
}

/// The typed id, or `INVALID_ARGUMENT` naming `field` when it is 0:
/// `required_id("pool", request.pool, PoolId)?`.
pub fn required_id<Id>(field: &str, value: u64, make: fn(u64) -> Id) -> Result<Id, Status> {
    optional_id(value, make).ok_or_else(|| invalid_argument(field, "is required (0 is not an id)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::PoolId;

    #[test]
    fn zero_means_unset() {
        assert_eq!(optional_id(0, PoolId), None);
        assert_eq!(optional_id(4, PoolId), Some(PoolId(4)));
        assert_eq!(required_id("pool", 4, PoolId).unwrap(), PoolId(4));
        let status = required_id("pool", 0, PoolId).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("invalid pool:"));
    }
}
