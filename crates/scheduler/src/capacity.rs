//! Integer capacity arithmetic: how many replicas of one request fit in a free vector,
//! and per-dimension minimums. Agrees with `corral_model::fit::capacity_fit`: one
//! replica fits exactly when `replica_slots` is at least one.

use corral_model::Resources;

/// How many replicas of `per_replica` fit in `free`, on every dimension at once.
/// Dimensions the replica does not ask for do not limit it; a request of all zeros
/// fits any number of times (`u32::MAX`).
pub(crate) fn replica_slots(free: &Resources, per_replica: &Resources) -> u32 {
    if corral_model::fault_injection::skip_capacity_checks() {
        return u32::MAX;
    }
    free.dimensions()
        .iter()
        .zip(per_replica.dimensions().iter())
        .filter(|(_, need)| **need > 0)
        .map(|(have, need)| have / need)
        .min()
        .map_or(u32::MAX, |slots| u32::try_from(slots).unwrap_or(u32::MAX))
}

/// The smaller of the two on each dimension.
pub(crate) fn per_dimension_minimum(first: &Resources, second: &Resources) -> Resources {
    Resources {
        cpu_millicores: first.cpu_millicores.min(second.cpu_millicores),
        memory_mib: first.memory_mib.min(second.memory_mib),
        accelerators: first.accelerators.min(second.accelerators),
        disk_gib: first.disk_gib.min(second.disk_gib),
        bandwidth_mbps: first.bandwidth_mbps.min(second.bandwidth_mbps),
    }
}

/// `per_replica` times `replicas`, saturating: used only to reduce free tallies that
/// were checked to hold that much.
pub(crate) fn times(per_replica: &Resources, replicas: u32) -> Resources {
    per_replica.checked_mul(replicas).unwrap_or(Resources {
        cpu_millicores: u64::MAX,
        memory_mib: u64::MAX,
        accelerators: u32::MAX,
        disk_gib: u64::MAX,
        bandwidth_mbps: u64::MAX,
    })
}

/// `free` minus `taken`, never below zero on any dimension.
pub(crate) fn saturating_sub(free: &Resources, taken: &Resources) -> Resources {
    Resources {
        cpu_millicores: free.cpu_millicores.saturating_sub(taken.cpu_millicores),
        memory_mib: free.memory_mib.saturating_sub(taken.memory_mib),
        accelerators: free.accelerators.saturating_sub(taken.accelerators),
        disk_gib: free.disk_gib.saturating_sub(taken.disk_gib),
        bandwidth_mbps: free.bandwidth_mbps.saturating_sub(taken.bandwidth_mbps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::fit::capacity_fit;
    use corral_model::{JobKind, JobSpec, PoolId};
    use std::collections::BTreeMap;

    fn resources(cpu_millicores: u64, memory_mib: u64, accelerators: u32) -> Resources {
        Resources {
            cpu_millicores,
            memory_mib,
            accelerators,
            disk_gib: 0,
            bandwidth_mbps: 0,
        }
    }

    fn spec_asking(per_replica: Resources) -> JobSpec {
        JobSpec {
            name: "probe".into(),
            pool: PoolId(1),
            kind: JobKind::Inference,
            replicas: 1,
            per_replica,
            accelerator_type: None,
            priority: 1,
            command: vec!["true".into()],
            environment: BTreeMap::new(),
            secret_environment: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            max_runtime_ms: None,
            queue: None,
        }
    }

    #[test]
    fn slots_are_limited_by_the_tightest_dimension() {
        let free = resources(64_000, 512, 8);
        assert_eq!(replica_slots(&free, &resources(8_000, 64, 1)), 8);
        assert_eq!(replica_slots(&free, &resources(8_000, 64, 3)), 2);
        assert_eq!(replica_slots(&free, &resources(40_000, 1, 0)), 1);
        assert_eq!(replica_slots(&free, &resources(1, 1024, 0)), 0);
    }

    #[test]
    fn one_slot_exactly_when_capacity_fit_accepts() {
        let free = resources(10_000, 100, 2);
        for need in [
            resources(10_000, 100, 2),
            resources(10_001, 1, 0),
            resources(1, 101, 0),
            resources(1, 1, 3),
        ] {
            assert_eq!(
                replica_slots(&free, &need) >= 1,
                capacity_fit(&free, &spec_asking(need)).is_ok(),
                "disagreement for {need}"
            );
        }
    }

    #[test]
    fn minimum_and_subtraction_work_per_dimension() {
        let first = resources(5, 50, 1);
        let second = resources(7, 20, 4);
        assert_eq!(per_dimension_minimum(&first, &second), resources(5, 20, 1));
        assert_eq!(saturating_sub(&first, &second), resources(0, 30, 0));
        assert_eq!(times(&first, 3), resources(15, 150, 3));
    }
}
