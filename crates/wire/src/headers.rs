//! Metadata keys of corral's gRPC calls, as both ends spell them.

/// Metadata key carrying the bearer token (`Bearer <token>`).
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Metadata key on an `Unavailable` status naming the current leader's address.
pub const LEADER_HEADER: &str = "x-corral-leader";
/// Metadata key on an `Unavailable` status when the write was certainly not proposed,
/// so a client may retry it without risking a duplicate.
pub const NOT_PROPOSED_HEADER: &str = "x-corral-not-proposed";
/// Metadata key carrying the client's id for one logical write, the same on its retries
/// (the server answers a repeat with the first outcome).
pub const REQUEST_ID_HEADER: &str = "x-corral-request-id";
/// Metadata key on a rejected write carrying the rejection's code (e.g. `NotFound`).
pub const REJECTION_HEADER: &str = "x-corral-rejection";
/// Metadata key on an `Unavailable` status from a replica that cannot serve at all (its
/// storage failed, or it leads without hearing from a quorum): the client tries another
/// replica, and trusts no leader this one names.
pub const UNHEALTHY_HEADER: &str = "x-corral-unhealthy";
