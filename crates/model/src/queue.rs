//! Queues inside a pool (ModelArts logical subpools, Kueue ClusterQueues): each has a
//! guaranteed quota, a limit and a weight, and the tenants that may submit to it.
//!
//! `admits` is the one copy of the borrowing rule; the scheduler plans with it and the
//! plan applier re-checks every placement with it:
//! - a queue's use never passes its limit;
//! - within its guarantee a queue is always admitted;
//! - beyond it, a queue borrows only what the other queues' unused guarantees leave:
//!   on every dimension where the queue would be above its guarantee, the sum over the
//!   pool's queues of `max(use, guarantee)` stays within the pool's capacity. Borrowing
//!   therefore never takes what another queue is guaranteed and does not use.

use crate::ids::{PoolId, TenantId};
use crate::limits::{MAX_MEMBERS_PER_QUEUE, MAX_QUEUE_WEIGHT};
use crate::names::validate_name;
use crate::rejection::Rejection;
use crate::resources::{Resources, DIMENSION_NAMES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub pool: PoolId,
    /// Unique within the pool.
    pub name: String,
    /// Always admitted up to this much (if the pool still has the capacity).
    pub guarantee: Resources,
    /// Never more than this, borrowing included.
    pub limit: Resources,
    /// 1..=`MAX_QUEUE_WEIGHT`; the share of borrowed capacity (kept for fair sharing).
    pub weight: u32,
    /// Tenants that may submit to the queue. In a dedicated pool the owner always may.
    pub members: BTreeSet<TenantId>,
    /// Jobs of the pool that name no queue go to the default queue.
    pub default: bool,
    /// What the queue's jobs hold now (kept by the state machine, checked by invariant 6).
    pub used: Resources,
    pub created_at_ms: u64,
}

/// What a queue create or update sets (the state fills in the rest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub pool: PoolId,
    pub name: String,
    pub guarantee: Resources,
    pub limit: Resources,
    pub weight: u32,
    pub members: BTreeSet<TenantId>,
    pub default: bool,
}

impl QueueSpec {
    /// The queue this spec sets, holding `used` and created at `created_at_ms`.
    pub fn to_queue(&self, used: Resources, created_at_ms: u64) -> Queue {
        Queue {
            pool: self.pool,
            name: self.name.clone(),
            guarantee: self.guarantee,
            limit: self.limit,
            weight: self.weight,
            members: self.members.clone(),
            default: self.default,
            used,
            created_at_ms,
        }
    }

    /// Checks that need no state: name, weight, member count, guarantee within limit.
    pub fn validate_shape(&self) -> Result<(), Rejection> {
        validate_name("name", &self.name)?;
        if !(1..=MAX_QUEUE_WEIGHT).contains(&self.weight) {
            return Err(Rejection::invalid(
                "weight",
                format!("must be 1..={MAX_QUEUE_WEIGHT}"),
            ));
        }
        if self.members.len() > MAX_MEMBERS_PER_QUEUE {
            return Err(Rejection::limit("members per queue", MAX_MEMBERS_PER_QUEUE));
        }
        if let Some(dimension) = self.guarantee.first_exceeding(&self.limit) {
            return Err(Rejection::invalid(
                "guarantee",
                format!("exceeds the limit on {dimension}"),
            ));
        }
        Ok(())
    }
}

impl Queue {
    /// Whether `tenant` may submit to this queue; `owner` is the pool's owner, if any.
    pub fn admits_member(&self, tenant: TenantId, owner: Option<TenantId>) -> bool {
        owner == Some(tenant) || self.members.contains(&tenant)
    }

    /// What the queue uses beyond its guarantee, per dimension.
    pub fn borrowed(&self) -> Resources {
        saturating_sub(&self.used, &self.guarantee)
    }

    /// What the queue is guaranteed and does not use (lendable), per dimension.
    pub fn unused_guarantee(&self) -> Resources {
        saturating_sub(&self.guarantee, &self.used)
    }
}

/// One queue's standing, as `admits` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStanding {
    pub guarantee: Resources,
    pub limit: Resources,
    pub used: Resources,
}

/// Why a queue cannot take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The queue would pass its limit on this dimension.
    OverLimit(&'static str),
    /// Borrowing this much on this dimension would take other queues' unused guarantee.
    NothingToBorrow(&'static str),
}

impl fmt::Display for QueueRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueRefusal::OverLimit(dimension) => {
                write!(formatter, "queue limit reached on {dimension}")
            }
            QueueRefusal::NothingToBorrow(dimension) => write!(
                formatter,
                "beyond its guarantee on {dimension}, and the other queues' unused guarantees leave nothing to borrow"
            ),
        }
    }
}

/// Whether the queue at `target` of `queues` (every queue of one pool) may take
/// `request` more, in a pool whose nodes offer `capacity`. The borrowing rule of the
/// module doc; the one copy of it.
pub fn admits(
    queues: &[QueueStanding],
    target: usize,
    request: &Resources,
    capacity: &Resources,
) -> Result<(), QueueRefusal> {
    let Some(queue) = queues.get(target) else {
        return Err(QueueRefusal::OverLimit("queue"));
    };
    let after = queue.used.saturating_add(request);
    if let Some(dimension) = after.first_exceeding(&queue.limit) {
        return Err(QueueRefusal::OverLimit(dimension));
    }
    let after_dimensions = after.dimensions();
    let guarantee_dimensions = queue.guarantee.dimensions();
    let capacity_dimensions = capacity.dimensions();
    for dimension in 0..DIMENSION_NAMES.len() {
        if after_dimensions[dimension] <= guarantee_dimensions[dimension] {
            continue;
        }
        let mut claimed: u128 = 0;
        for (position, other) in queues.iter().enumerate() {
            let used = if position == target {
                after_dimensions[dimension]
            } else {
                other.used.dimensions()[dimension]
            };
            claimed += u128::from(used.max(other.guarantee.dimensions()[dimension]));
        }
        if claimed > u128::from(capacity_dimensions[dimension]) {
            return Err(QueueRefusal::NothingToBorrow(DIMENSION_NAMES[dimension]));
        }
    }
    Ok(())
}

/// Whether the guarantees of `queues` together fit in `capacity`; the first dimension
/// where they do not.
pub fn guarantees_exceed(
    guarantees: impl Iterator<Item = Resources>,
    capacity: &Resources,
) -> Option<&'static str> {
    let total = guarantees.fold(Resources::ZERO, |sum, guarantee| {
        sum.saturating_add(&guarantee)
    });
    total.first_exceeding(capacity)
}

/// Of each queue's unused guarantee, how much others' borrowing holds (in the order
/// of `queues`). The borrowing rule keeps this zero while the pool's capacity stands;
/// when nodes leave, what the queues claim (`max(use, guarantee)` summed) can pass the
/// capacity, and the excess is counted against the unused guarantees, in order.
pub fn lent(queues: &[QueueStanding], capacity: &Resources) -> Vec<Resources> {
    let capacity = capacity.dimensions();
    let mut excess = [0u64; DIMENSION_NAMES.len()];
    for (dimension, slot) in excess.iter_mut().enumerate() {
        let claimed: u128 = queues
            .iter()
            .map(|queue| {
                u128::from(
                    queue.used.dimensions()[dimension].max(queue.guarantee.dimensions()[dimension]),
                )
            })
            .sum();
        let over = claimed.saturating_sub(u128::from(capacity[dimension]));
        *slot = u64::try_from(over).unwrap_or(u64::MAX);
    }
    queues
        .iter()
        .map(|queue| {
            let unused = saturating_sub(&queue.guarantee, &queue.used).dimensions();
            let mut taken = [0u64; DIMENSION_NAMES.len()];
            for dimension in 0..DIMENSION_NAMES.len() {
                taken[dimension] = unused[dimension].min(excess[dimension]);
                excess[dimension] -= taken[dimension];
            }
            Resources {
                cpu_millicores: taken[0],
                memory_mib: taken[1],
                accelerators: u32::try_from(taken[2]).unwrap_or(u32::MAX),
                disk_gib: taken[3],
                bandwidth_mbps: taken[4],
            }
        })
        .collect()
}

fn saturating_sub(left: &Resources, right: &Resources) -> Resources {
    Resources {
        cpu_millicores: left.cpu_millicores.saturating_sub(right.cpu_millicores),
        memory_mib: left.memory_mib.saturating_sub(right.memory_mib),
        accelerators: left.accelerators.saturating_sub(right.accelerators),
        disk_gib: left.disk_gib.saturating_sub(right.disk_gib),
        bandwidth_mbps: left.bandwidth_mbps.saturating_sub(right.bandwidth_mbps),
    }
}

/// A limit with no bound on any dimension (a dimension a person leaves out of a limit).
pub const UNBOUNDED: Resources = Resources {
    cpu_millicores: u64::MAX,
    memory_mib: u64::MAX,
    accelerators: u32::MAX,
    disk_gib: u64::MAX,
    bandwidth_mbps: u64::MAX,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(millicores: u64) -> Resources {
        Resources {
            cpu_millicores: millicores,
            ..Resources::ZERO
        }
    }

    fn standing(guarantee: u64, limit: u64, used: u64) -> QueueStanding {
        QueueStanding {
            guarantee: cpu(guarantee),
            limit: cpu(limit),
            used: cpu(used),
        }
    }

    #[test]
    fn within_guarantee_is_admitted_and_the_limit_holds() {
        let queues = [standing(4, 8, 0), standing(4, 8, 4)];
        assert_eq!(admits(&queues, 0, &cpu(4), &cpu(8)), Ok(()));
        assert_eq!(
            admits(&queues, 1, &cpu(5), &cpu(100)),
            Err(QueueRefusal::OverLimit("cpu_millicores"))
        );
    }

    #[test]
    fn borrowing_takes_only_unused_guarantee_left_over() {
        // Pool of 10: queue 0 guaranteed 4 (unused), queue 1 guaranteed 4 using 4.
        // Queue 1 may borrow the 2 nobody is guaranteed, not queue 0's 4.
        let queues = [standing(4, 10, 0), standing(4, 10, 4)];
        assert_eq!(admits(&queues, 1, &cpu(2), &cpu(10)), Ok(()));
        assert_eq!(
            admits(&queues, 1, &cpu(3), &cpu(10)),
            Err(QueueRefusal::NothingToBorrow("cpu_millicores"))
        );
        // Once queue 0 uses its guarantee, it may borrow the rest too.
        let queues = [standing(4, 10, 4), standing(4, 10, 4)];
        assert_eq!(admits(&queues, 0, &cpu(2), &cpu(10)), Ok(()));
    }

    #[test]
    fn lent_is_what_borrowers_hold_of_unused_guarantees_after_capacity_shrank() {
        // Queue 0 guaranteed 4, using 0; queue 1 borrowed up to 6 of a pool of 10 that
        // then lost 2: 2 of queue 0's guarantee are held by queue 1.
        let queues = [standing(4, 10, 0), standing(4, 10, 6)];
        assert_eq!(lent(&queues, &cpu(10)), vec![cpu(0), cpu(0)]);
        assert_eq!(lent(&queues, &cpu(8)), vec![cpu(2), cpu(0)]);
    }

    #[test]
    fn a_missing_queue_admits_nothing() {
        assert!(admits(&[], 0, &cpu(1), &cpu(1)).is_err());
    }

    #[test]
    fn spec_shape_rules() {
        let mut spec = QueueSpec {
            pool: PoolId(1),
            name: "team-a".to_string(),
            guarantee: cpu(4),
            limit: cpu(8),
            weight: 1,
            members: BTreeSet::new(),
            default: false,
        };
        assert!(spec.validate_shape().is_ok());
        spec.weight = 0;
        assert!(spec.validate_shape().is_err());
        spec.weight = 1;
        spec.guarantee = cpu(9);
        assert!(spec.validate_shape().is_err());
        spec.guarantee = cpu(1);
        spec.name = "Team".to_string();
        assert!(spec.validate_shape().is_err());
    }
}
