//! Why a command was refused. Every replica refuses the same command for the same
//! reason; the proposer gets the reason back as a typed error.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// A field of the command is malformed or out of range.
    InvalidArgument { field: String, reason: String },
    /// The object does not exist, or the principal may not see it. The state machine
    /// answers NotFound for another tenant's objects, so their existence does not leak.
    NotFound { kind: String, id: String },
    /// The principal may see the object but not perform this operation.
    PermissionDenied { reason: String },
    /// The credential the write was authorized with was revoked, expired or changed
    /// before the write reached the log.
    Unauthenticated { reason: String },
    /// An object of this kind with this name already exists.
    AlreadyExists { kind: String, name: String },
    /// A bound of `limits` would be exceeded.
    LimitExceeded { what: String, limit: u64 },
    /// The object is not in a state that allows the operation.
    InvalidState {
        kind: String,
        id: String,
        state: String,
        operation: String,
    },
    /// Not enough free nodes of the flavor in the zone for a pool create or scale.
    InsufficientNodes {
        flavor: String,
        zone: String,
        wanted: u32,
        free: u32,
    },
    /// The tenant's quota would be exceeded.
    QuotaExceeded { tenant: String, dimension: String },
    /// A network CIDR overlaps another network or a platform range.
    Overlap { cidr: String, other: String },
    /// The object is still in use by others (a network by pools, a flavor by nodes, ...).
    InUse {
        kind: String,
        id: String,
        by: String,
    },
}

impl Rejection {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Rejection {
        Rejection::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub fn not_found(kind: &str, id: impl fmt::Display) -> Rejection {
        Rejection::NotFound {
            kind: kind.to_string(),
            id: id.to_string(),
        }
    }

    pub fn denied(reason: impl Into<String>) -> Rejection {
        Rejection::PermissionDenied {
            reason: reason.into(),
        }
    }

    pub fn unauthenticated(reason: impl Into<String>) -> Rejection {
        Rejection::Unauthenticated {
            reason: reason.into(),
        }
    }

    pub fn exists(kind: &str, name: impl Into<String>) -> Rejection {
        Rejection::AlreadyExists {
            kind: kind.to_string(),
            name: name.into(),
        }
    }

    pub fn limit(what: &str, limit: usize) -> Rejection {
        Rejection::LimitExceeded {
            what: what.to_string(),
            limit: limit as u64,
        }
    }

    pub fn state(
        kind: &str,
        id: impl fmt::Display,
        state: impl fmt::Debug,
        operation: &str,
    ) -> Rejection {
        Rejection::InvalidState {
            kind: kind.to_string(),
            id: id.to_string(),
            // A state named by a string rather than an enum prints without the quotes
            // `Debug` gives a `&str`, so every `state` reads like `Running`.
            state: format!("{state:?}").trim_matches('"').to_string(),
            operation: operation.to_string(),
        }
    }

    pub fn in_use(kind: &str, id: impl fmt::Display, by: impl Into<String>) -> Rejection {
        Rejection::InUse {
            kind: kind.to_string(),
            id: id.to_string(),
            by: by.into(),
        }
    }

    /// A short stable code for each variant, for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidArgument { .. } => "invalid_argument",
            Rejection::NotFound { .. } => "not_found",
            Rejection::PermissionDenied { .. } => "permission_denied",
            Rejection::Unauthenticated { .. } => "unauthenticated",
            Rejection::AlreadyExists { .. } => "already_exists",
            Rejection::LimitExceeded { .. } => "limit_exceeded",
            Rejection::InvalidState { .. } => "invalid_state",
            Rejection::InsufficientNodes { .. } => "insufficient_nodes",
            Rejection::QuotaExceeded { .. } => "quota_exceeded",
            Rejection::Overlap { .. } => "overlap",
            Rejection::InUse { .. } => "in_use",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::InvalidArgument { field, reason } => write!(formatter, "invalid {field}: {reason}"),
            Rejection::NotFound { kind, id } => write!(formatter, "{kind} {id} not found"),
            Rejection::PermissionDenied { reason } => write!(formatter, "permission denied: {reason}"),
            Rejection::Unauthenticated { reason } => write!(formatter, "unauthenticated: {reason}"),
            Rejection::AlreadyExists { kind, name } => write!(formatter, "{kind} '{name}' already exists"),
            Rejection::LimitExceeded { what, limit } => write!(formatter, "limit exceeded: at most {limit} {what}"),
            Rejection::InvalidState { kind, id, state, operation } => {
                write!(formatter, "cannot {operation} {kind} {id} while it is {state}")
            }
            Rejection::InsufficientNodes { flavor, zone, wanted, free } => write!(
                formatter,
                "not enough free nodes of flavor {flavor} in zone {zone}: wanted {wanted}, free {free}"
            ),
            Rejection::QuotaExceeded { tenant, dimension } => {
                write!(formatter, "quota of tenant {tenant} exceeded on {dimension}")
            }
            Rejection::Overlap { cidr, other } => write!(formatter, "CIDR {cidr} overlaps {other}"),
            Rejection::InUse { kind, id, by } => write!(formatter, "{kind} {id} is in use by {by}"),
        }
    }
}

impl std::error::Error for Rejection {}
