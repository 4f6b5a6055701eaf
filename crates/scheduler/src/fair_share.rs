//! Dominant-resource fair share across the tenants of the public pool: the next job
//! comes from the tenant with the lowest dominant share (its allocation in the pool
//! divided by the pool's capacity, on its largest dimension; ties by tenant id), among
//! tenants with jobs still to consider. Shares move as the round places work. Within a
//! tenant, jobs keep queue order.

use crate::pool_nodes::{NodeSlot, PoolNodes};
use corral_model::ids::TenantId;
use corral_model::Resources;
use corral_state::State;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub(crate) struct FairShareOrder {
    /// Per tenant, positions of its jobs in the queue, in queue order.
    waiting: BTreeMap<TenantId, VecDeque<usize>>,
    allocation: BTreeMap<TenantId, Resources>,
    share_ppm: BTreeMap<TenantId, u64>,
    pool_capacity: Resources,
    /// Tenants with waiting jobs, by (dominant share in ppm, tenant).
    ready: BTreeSet<(u64, TenantId)>,
    /// The tenant whose job was handed out last; it rejoins `ready` with its current
    /// share on the next call.
    last_picked: Option<TenantId>,
}

impl FairShareOrder {
    /// `tenants[position]` is the tenant of the job at that queue position;
    /// `allocation` is what each tenant holds in the pool now.
    pub(crate) fn new(
        tenants: impl Iterator<Item = TenantId>,
        allocation: BTreeMap<TenantId, Resources>,
        pool_capacity: Resources,
    ) -> Self {
        let mut waiting: BTreeMap<TenantId, VecDeque<usize>> = BTreeMap::new();
        for (position, tenant) in tenants.enumerate() {
            waiting.entry(tenant).or_default().push_back(position);
        }
        let share_ppm: BTreeMap<TenantId, u64> = waiting
            .keys()
            .map(|tenant| {
                let held = allocation.get(tenant).copied().unwrap_or(Resources::ZERO);
                (*tenant, held.dominant_share_ppm(&pool_capacity))
            })
            .collect();
        let ready = share_ppm
            .iter()
            .map(|(tenant, share)| (*share, *tenant))
            .collect();
        FairShareOrder {
            waiting,
            allocation,
            share_ppm,
            pool_capacity,
            ready,
            last_picked: None,
        }
    }

    pub(crate) fn next_job(&mut self) -> Option<usize> {
        if let Some(tenant) = self.last_picked.take() {
            if self
                .waiting
                .get(&tenant)
                .is_some_and(|jobs| !jobs.is_empty())
            {
                let share = self.share_ppm.get(&tenant).copied().unwrap_or(0);
                self.ready.insert((share, tenant));
            }
        }
        let (_, tenant) = self.ready.pop_first()?;
        self.last_picked = Some(tenant);
        self.waiting.get_mut(&tenant)?.pop_front()
    }

    pub(crate) fn record_placement(&mut self, tenant: TenantId, resources: &Resources) {
        let held = self.allocation.entry(tenant).or_default();
        *held = held.saturating_add(resources);
        let share = held.dominant_share_ppm(&self.pool_capacity);
        self.share_ppm.insert(tenant, share);
    }
}

/// What each tenant's work holds on the pool's nodes now.
pub(crate) fn tenant_allocations(
    state: &State,
    nodes: &PoolNodes,
) -> BTreeMap<TenantId, Resources> {
    let mut allocation: BTreeMap<TenantId, Resources> = BTreeMap::new();
    for slot in 0..nodes.node_count() as NodeSlot {
        for held in &nodes.node(slot).allocations {
            if let Some(job) = state.job(held.job) {
                let total = allocation.entry(job.tenant).or_default();
                *total = total.saturating_add(&held.resources);
            }
        }
    }
    allocation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accelerators(count: u32) -> Resources {
        Resources {
            accelerators: count,
            ..Resources::ZERO
        }
    }

    #[test]
    fn the_tenant_with_the_lowest_share_goes_next_and_ties_go_to_the_lower_id() {
        let (first, second) = (TenantId(1), TenantId(2));
        let queue = [first, first, first, second, second];
        let held = BTreeMap::from([(first, accelerators(2))]);
        let mut order = FairShareOrder::new(queue.into_iter(), held, accelerators(8));
        assert_eq!(order.next_job(), Some(3), "second holds nothing");
        order.record_placement(second, &accelerators(2));
        assert_eq!(order.next_job(), Some(0), "equal shares: lower tenant id");
        order.record_placement(first, &accelerators(1));
        assert_eq!(order.next_job(), Some(4));
        assert_eq!(order.next_job(), Some(1), "second has no jobs left");
        assert_eq!(order.next_job(), Some(2));
        assert_eq!(order.next_job(), None);
    }
}
