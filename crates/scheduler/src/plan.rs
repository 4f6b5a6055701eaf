//! What a round returns: the placements to propose and what the round saw.

use crate::reservation::Reservation;
use corral_model::ids::{JobId, PoolId};
use corral_model::{Command, Placement};

/// The result of one scheduling round over one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub pool: PoolId,
    /// In the order they were decided; the state machine commits them in this order.
    pub placements: Vec<Placement>,
    pub diagnostics: RoundDiagnostics,
}

/// Counts and the head job's reservation, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundDiagnostics {
    /// Queued jobs the round looked at. Fewer than the queue when the round stopped at
    /// the placement limit or because the pool was full.
    pub jobs_considered: usize,
    /// Jobs with a placement in the plan (equals `placements.len()`).
    pub jobs_placed: usize,
    /// Replicas over all placements.
    pub replicas_placed: usize,
    /// Jobs skipped because the tenant's quota has no room for them.
    pub jobs_skipped_for_quota: usize,
    /// Jobs skipped because their queue is at its limit or has nothing to borrow.
    pub jobs_skipped_for_queue: usize,
    /// Jobs that did not fit (the head among them).
    pub jobs_not_fitting: usize,
    /// The first job that did not fit, and its reservation.
    pub head: Option<HeadJob>,
    /// The round stopped before the end of the queue because no node had room left
    /// for the smallest queued request (and the head was known).
    pub stopped_with_pool_full: bool,
    /// When the round began, no queued job could be placed at all: the pool takes no
    /// work, its queue was empty, or no node had room for the per-dimension minimum of
    /// the queued requests. Until capacity is freed, only a newly queued job that fits
    /// some node can change that (`any_could_fit`).
    pub nothing_fits_any_node: bool,
}

/// The head of the queue: the first job in round order that could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadJob {
    pub job: JobId,
    /// How many placements of the plan were decided before the head was found; the
    /// rest are backfill, placed only where they do not delay the reservation.
    pub placements_before_head: usize,
    /// `None` when the head cannot fit even after every job with a known end has
    /// ended; then nothing is reserved this round.
    pub reservation: Option<Reservation>,
}

impl Plan {
    pub(crate) fn empty(pool: PoolId) -> Plan {
        Plan {
            pool,
            placements: Vec::new(),
            diagnostics: RoundDiagnostics::default(),
        }
    }

    /// The plan of a pool where no queued job can be placed (see
    /// `RoundDiagnostics::nothing_fits_any_node`).
    pub(crate) fn nothing_fits(pool: PoolId) -> Plan {
        let mut plan = Plan::empty(pool);
        plan.diagnostics.nothing_fits_any_node = true;
        plan
    }

    pub fn is_empty(&self) -> bool {
        self.placements.is_empty()
    }

    /// The command to propose (with `Principal::System`).
    pub fn to_command(&self) -> Command {
        Command::SchedulerPlan {
            pool: self.pool,
            placements: self.placements.clone(),
        }
    }

    /// The command to propose, consuming the plan.
    pub fn into_command(self) -> Command {
        Command::SchedulerPlan {
            pool: self.pool,
            placements: self.placements,
        }
    }
}
