//! Billing: meters that accrue cost over time and the ledger lines they produce.
//!
//! A meter is an interval with a rate: one per placed public-pool replica, one per node
//! of a pay-per-use dedicated pool. The amount owed up to time t is
//! `floor(rate * (t - start) / hour)`, and each bill line is the difference of two such
//! values, so the lines of a meter always add up to exactly its total (invariant 5):
//! nothing unbilled, nothing twice, no rounding drift.

use crate::ids::{JobId, MeterId, NodeId, PoolId, TenantId};
use crate::limits::HOUR_MS;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BillSubject {
    /// One replica of a public-pool job on one node.
    JobReplica { job: JobId, rank: u32, node: NodeId },
    /// One node of a pay-per-use dedicated pool.
    Node { node: NodeId },
    /// A prepaid period of a yearly/monthly pool.
    PrepaidPeriod,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub id: MeterId,
    pub tenant: TenantId,
    pub pool: PoolId,
    pub subject: BillSubject,
    pub rate_micros_per_hour: u64,
    pub started_at_ms: u64,
    pub billed_until_ms: u64,
    pub billed_micros: u64,
}

impl Meter {
    /// What the meter owes from its start up to `at_ms`.
    pub fn accrued_micros(&self, at_ms: u64) -> u64 {
        let elapsed_ms = at_ms.saturating_sub(self.started_at_ms);
        let owed =
            u128::from(self.rate_micros_per_hour) * u128::from(elapsed_ms) / u128::from(HOUR_MS);
        u64::try_from(owed).unwrap_or(u64::MAX)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillLine {
    pub tenant: TenantId,
    pub pool: PoolId,
    pub subject: BillSubject,
    pub meter: Option<MeterId>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub amount_micros: u64,
}

/// Hourly rate of a replica in the public pool: the node's price times the replica's
/// dominant share of the node.
pub fn replica_rate_micros_per_hour(
    node_price_micros_per_hour: u64,
    dominant_share_ppm: u64,
) -> u64 {
    let rate = u128::from(node_price_micros_per_hour) * u128::from(dominant_share_ppm) / 1_000_000;
    u64::try_from(rate).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accrual_telescopes_without_drift() {
        let meter = Meter {
            id: MeterId(1),
            tenant: TenantId(1),
            pool: PoolId(1),
            subject: BillSubject::Node { node: NodeId(1) },
            rate_micros_per_hour: 1_000_003,
            started_at_ms: 1_000,
            billed_until_ms: 1_000,
            billed_micros: 0,
        };
        let cut_points = [1_000u64, 1_777, 50_000, 3_601_000, 7_200_001];
        let sum: u64 = cut_points
            .windows(2)
            .map(|pair| meter.accrued_micros(pair[1]) - meter.accrued_micros(pair[0]))
            .sum();
        assert_eq!(sum, meter.accrued_micros(7_200_001));
        assert_eq!(meter.accrued_micros(1_000 + HOUR_MS), 1_000_003);
    }

    #[test]
    fn replica_rate_is_price_times_share() {
        assert_eq!(replica_rate_micros_per_hour(8_000_000, 250_000), 2_000_000);
    }
}
