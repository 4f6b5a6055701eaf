//! Reading the events of an applied entry, and asserting rejections.

use crate::Applied;
use corral_model::ids::JobId;
use corral_model::limits::HOUR_MS;
use corral_model::{Event, JobState, Rejection};

/// The events of an applied entry, without their records.
pub fn events(applied: &Applied) -> Vec<Event> {
    applied
        .events
        .iter()
        .map(|record| record.event.clone())
        .collect()
}

pub fn has_event(applied: &Applied, wanted: &Event) -> bool {
    applied.events.iter().any(|record| record.event == *wanted)
}

/// The job state changes of an applied entry, as `(job, from, to)`.
pub fn transitions(applied: &Applied) -> Vec<(JobId, JobState, JobState)> {
    applied
        .events
        .iter()
        .filter_map(|record| match &record.event {
            Event::JobStateChanged { job, from, to, .. } => Some((*job, *from, *to)),
            _ => None,
        })
        .collect()
}

pub fn placement_rejection(applied: &Applied) -> Option<String> {
    applied
        .events
        .iter()
        .find_map(|record| match &record.event {
            Event::PlacementRejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
}

/// Jobs whose placement was rejected by the plan applier.
pub fn rejected_jobs(applied: &Applied) -> Vec<JobId> {
    applied
        .events
        .iter()
        .filter_map(|record| match &record.event {
            Event::PlacementRejected { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

/// Amount billed by `Billed` events of an applied entry.
pub fn billed_in(applied: &Applied) -> u64 {
    applied
        .events
        .iter()
        .map(|record| match record.event {
            Event::Billed { amount_micros, .. } => amount_micros,
            _ => 0,
        })
        .sum()
}

/// `floor(rate × duration / hour)`, the integral a meter owes.
pub fn owed(rate_micros_per_hour: u64, duration_ms: u64) -> u64 {
    (u128::from(rate_micros_per_hour) * u128::from(duration_ms) / u128::from(HOUR_MS)) as u64
}

// Rejection assertions: the variant and its key field.

#[track_caller]
pub fn expect_invalid(rejection: &Rejection, expected_field: &str) {
    match rejection {
        Rejection::InvalidArgument { field, .. } if field == expected_field => {}
        other => panic!("expected InvalidArgument on {expected_field}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_not_found(rejection: &Rejection, expected_kind: &str) {
    match rejection {
        Rejection::NotFound { kind, .. } if kind == expected_kind => {}
        other => panic!("expected NotFound of a {expected_kind}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_not_found_id(rejection: &Rejection, expected_kind: &str, expected_id: &str) {
    match rejection {
        Rejection::NotFound { kind, id } if kind == expected_kind && id == expected_id => {}
        other => panic!("expected NotFound of {expected_kind} {expected_id}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_denied(rejection: &Rejection) {
    assert!(
        matches!(rejection, Rejection::PermissionDenied { .. }),
        "expected PermissionDenied, got {rejection:?}"
    );
}

#[track_caller]
pub fn expect_exists(rejection: &Rejection, expected_kind: &str) {
    match rejection {
        Rejection::AlreadyExists { kind, .. } if kind == expected_kind => {}
        other => panic!("expected AlreadyExists of a {expected_kind}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_limit(rejection: &Rejection, expected_what: &str, expected_limit: u64) {
    match rejection {
        Rejection::LimitExceeded { what, limit }
            if what == expected_what && *limit == expected_limit => {}
        other => {
            panic!("expected LimitExceeded of {expected_what} at {expected_limit}, got {other:?}")
        }
    }
}

#[track_caller]
pub fn expect_state(
    rejection: &Rejection,
    expected_kind: &str,
    expected_state: &str,
    expected_operation: &str,
) {
    match rejection {
        Rejection::InvalidState {
            kind,
            state,
            operation,
            ..
        } if kind == expected_kind && state == expected_state && operation == expected_operation => {}
        other => panic!(
            "expected InvalidState of a {expected_kind} in {expected_state} for {expected_operation}, got {other:?}"
        ),
    }
}

#[track_caller]
pub fn expect_in_use(rejection: &Rejection, expected_kind: &str, by_contains: &str) {
    match rejection {
        Rejection::InUse { kind, by, .. } if kind == expected_kind && by.contains(by_contains) => {}
        other => panic!("expected InUse of a {expected_kind} by {by_contains}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_overlap(rejection: &Rejection, other_contains: &str) {
    match rejection {
        Rejection::Overlap { other, .. } if other.contains(other_contains) => {}
        other => panic!("expected Overlap with {other_contains}, got {other:?}"),
    }
}
