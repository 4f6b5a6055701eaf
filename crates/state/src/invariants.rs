//! The invariants listed in ARCHITECTURE.md ("Invariants"), checked over the whole state.
//! Tests and the simulation call `check_invariants` after every applied entry; the
//! handlers also assert the local form of each invariant where they change the numbers
//! involved.

use crate::apply::lifecycle::{queue_key, wants_queue};
use crate::state::State;
use corral_model::billing::BillSubject;
use corral_model::ids::{PoolId, TenantId};
use corral_model::job::allowed_transition;
use corral_model::{BillingMode, JobKind, JobState, PoolKind, ReplicaState, Resources};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantViolation {
    /// The number of the invariant in ARCHITECTURE.md (0 for internal consistency).
    pub invariant: u8,
    pub detail: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "invariant {} violated: {}",
            self.invariant, self.detail
        )
    }
}

impl std::error::Error for InvariantViolation {}

fn violation(invariant: u8, detail: String) -> Result<(), InvariantViolation> {
    Err(InvariantViolation { invariant, detail })
}

impl State {
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check_node_capacity()?;
        self.check_placements()?;
        self.check_job_states()?;
        self.check_billing()?;
        self.check_quotas()?;
        self.check_indexes()?;
        self.check_node_roles()?;
        self.check_node_loss()?;
        if let Err(detail) = crate::audit::check(&self.audit, self.now_ms) {
            return violation(0, detail);
        }
        Ok(())
    }

    /// Invariant 8: a lost node holds nothing (its work was taken off in the entry that
    /// marked it, and no placement lands on it); a training job past
    /// `MAX_DISRUPTIONS_PER_JOB` has ended; a job held back by a disruption backoff
    /// holds nothing.
    fn check_node_loss(&self) -> Result<(), InvariantViolation> {
        for node in self.nodes.values() {
            if node.status == corral_model::NodeStatus::Abnormal && !node.allocations.is_empty() {
                return violation(
                    8,
                    format!(
                        "lost node {} holds {} replicas",
                        node.id,
                        node.allocations.len()
                    ),
                );
            }
        }
        for job in self.jobs.values() {
            if job.spec.kind.is_gang()
                && job.disruptions > corral_model::limits::MAX_DISRUPTIONS_PER_JOB
                && !job.state.is_terminal()
            {
                return violation(
                    8,
                    format!(
                        "job {} was disrupted {} times and is {:?}",
                        job.id, job.disruptions, job.state
                    ),
                );
            }
            if job.not_before_ms.is_some() && job.placed_replicas().next().is_some() {
                return violation(8, format!("job {} is held back but holds replicas", job.id));
            }
        }
        Ok(())
    }

    /// Internal consistency of standby and upgrade flags: a standby holds no work and
    /// sits in a dedicated pool; an upgrading node is unschedulable and its pool has an
    /// upgrade under way.
    fn check_node_roles(&self) -> Result<(), InvariantViolation> {
        for node in self.nodes.values() {
            let pool = node.pool.and_then(|pool| self.pools.get(&pool));
            if node.standby
                && (!node.allocations.is_empty() || pool.is_none_or(|pool| pool.is_public()))
            {
                return violation(
                    0,
                    format!(
                        "standby node {} holds work or is outside a dedicated pool",
                        node.id
                    ),
                );
            }
            if node.upgrading.is_some()
                && (node.schedulable || pool.is_none_or(|pool| pool.pending_upgrade.is_none()))
            {
                return violation(
                    0,
                    format!(
                        "node {} is upgrading outside a pool upgrade or schedulable",
                        node.id
                    ),
                );
            }
        }
        Ok(())
    }

    /// 1. No node is allocated beyond its capacity; its books add up.
    fn check_node_capacity(&self) -> Result<(), InvariantViolation> {
        for node in self.nodes.values() {
            let mut sum = Resources::ZERO;
            let mut devices = 0u64;
            for allocation in &node.allocations {
                sum = sum.saturating_add(&allocation.resources);
                if devices & allocation.device_mask != 0 {
                    return violation(
                        1,
                        format!("node {} hands a device to two replicas", node.id),
                    );
                }
                devices |= allocation.device_mask;
            }
            if sum != node.allocated {
                return violation(
                    1,
                    format!(
                        "node {} allocated {} but its allocations sum to {}",
                        node.id, node.allocated, sum
                    ),
                );
            }
            if !node.allocated.fits_within(&node.capacity) {
                return violation(
                    1,
                    format!(
                        "node {} allocated {} beyond capacity {}",
                        node.id, node.allocated, node.capacity
                    ),
                );
            }
            if devices != node.devices_in_use
                || u64::from(devices.count_ones()) != u64::from(node.allocated.accelerators)
            {
                return violation(
                    1,
                    format!(
                        "node {} device mask disagrees with its allocations",
                        node.id
                    ),
                );
            }
        }
        Ok(())
    }

    /// 2. Replicas sit only on nodes of their job's pool; dedicated pools host only
    ///    their owner's work; node and job agree on every allocation.
    fn check_placements(&self) -> Result<(), InvariantViolation> {
        for node in self.nodes.values() {
            for allocation in &node.allocations {
                let Some(job) = self.jobs.get(&allocation.job) else {
                    return violation(
                        2,
                        format!(
                            "node {} holds an allocation of unknown job {}",
                            node.id, allocation.job
                        ),
                    );
                };
                if node.pool != Some(job.spec.pool) {
                    return violation(
                        2,
                        format!("job {} runs on node {} outside its pool", job.id, node.id),
                    );
                }
                if let Some(PoolKind::Dedicated { owner }) =
                    self.pools.get(&job.spec.pool).map(|pool| pool.kind)
                {
                    if owner != job.tenant {
                        return violation(
                            2,
                            format!(
                                "dedicated pool {} hosts job {} of tenant {}",
                                job.spec.pool, job.id, job.tenant
                            ),
                        );
                    }
                }
                let replica = job.replicas.get(allocation.rank as usize);
                if replica.and_then(|replica| replica.node) != Some(node.id)
                    || replica.map(|replica| replica.device_mask) != Some(allocation.device_mask)
                {
                    return violation(
                        2,
                        format!(
                            "node {} and job {} disagree on rank {}",
                            node.id, job.id, allocation.rank
                        ),
                    );
                }
            }
        }
        for job in self.jobs.values() {
            for replica in job.placed_replicas() {
                let node_id = replica.node.expect("placed");
                let on_node = self.nodes.get(&node_id).is_some_and(|node| {
                    node.allocations.iter().any(|allocation| {
                        allocation.job == job.id && allocation.rank == replica.rank
                    })
                });
                if !on_node {
                    return violation(
                        2,
                        format!(
                            "job {} rank {} claims node {} which does not hold it",
                            job.id, replica.rank, node_id
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// 3 and 4. Gangs are whole; every job is in one state its kind allows, queued
    /// exactly when it waits for placement; terminal jobs hold nothing.
    fn check_job_states(&self) -> Result<(), InvariantViolation> {
        for job in self.jobs.values() {
            let reachable = allowed_transition(&job.spec.kind, JobState::Creating, job.state)
                || [
                    JobState::Pending,
                    JobState::Deploying,
                    JobState::Running,
                    JobState::Stopped,
                    JobState::Stopping,
                    JobState::Terminating,
                    JobState::Concerning,
                    JobState::Abnormal,
                ]
                .iter()
                .any(|from| allowed_transition(&job.spec.kind, *from, job.state));
            if !reachable {
                return violation(
                    4,
                    format!(
                        "job {} is {:?}, a state {} jobs never reach",
                        job.id,
                        job.state,
                        job.spec.kind.label()
                    ),
                );
            }
            let placed = job.placed_replicas().count();
            if job.state.holds_nothing() && placed > 0 {
                return violation(
                    4,
                    format!(
                        "job {} is {:?} but holds {} replicas",
                        job.id, job.state, placed
                    ),
                );
            }
            if let JobKind::Training { .. } = job.spec.kind {
                let unplaced = job
                    .replicas
                    .iter()
                    .filter(|replica| replica.state == ReplicaState::Unplaced)
                    .count();
                if job.state == JobState::Running && unplaced > 0 {
                    return violation(
                        3,
                        format!(
                            "gang {} is Running with {} of {} replicas unplaced",
                            job.id,
                            unplaced,
                            job.replicas.len()
                        ),
                    );
                }
                if job.state == JobState::Pending && placed > 0 {
                    return violation(
                        3,
                        format!("gang {} is Pending with {} replicas placed", job.id, placed),
                    );
                }
            }
            let queued = self
                .queues
                .get(&job.spec.pool)
                .is_some_and(|queue| queue.contains(&queue_key(job)));
            if queued != wants_queue(job) {
                return violation(
                    4,
                    format!(
                        "job {} queued={} but wants placement={}",
                        job.id, queued, !queued
                    ),
                );
            }
            if job.shutdown_target.is_some()
                && !matches!(job.state, JobState::Terminating | JobState::Stopping)
            {
                return violation(
                    4,
                    format!("job {} has a shutdown target while {:?}", job.id, job.state),
                );
            }
        }
        let mut per_tenant: BTreeMap<TenantId, usize> = BTreeMap::new();
        for job in self.jobs.values().filter(|job| !job.state.is_terminal()) {
            *per_tenant.entry(job.tenant).or_default() += 1;
        }
        let active: usize = per_tenant.values().sum();
        if active != self.active_jobs {
            return violation(
                4,
                format!("{} active jobs counted as {}", active, self.active_jobs),
            );
        }
        if per_tenant != self.active_jobs_per_tenant {
            return violation(4, "the active jobs per tenant are miscounted".to_string());
        }
        Ok(())
    }

    /// 5. Billing equals the integral of billable time: every placed public-pool replica
    ///    and every node of a pay-per-use dedicated pool has exactly one open meter;
    ///    every meter's lines add up to its accrual up to where it was billed; the
    ///    ledger totals add up.
    fn check_billing(&self) -> Result<(), InvariantViolation> {
        let mut expected: BTreeMap<BillSubject, ()> = BTreeMap::new();
        for job in self.jobs.values() {
            let public = self
                .pools
                .get(&job.spec.pool)
                .is_some_and(|pool| pool.is_public());
            for replica in job.placed_replicas() {
                let node = replica.node.expect("placed");
                match (
                    public,
                    replica.meter.and_then(|meter| self.meters.get(&meter)),
                ) {
                    (true, Some(meter))
                        if meter.subject
                            == (BillSubject::JobReplica {
                                job: job.id,
                                rank: replica.rank,
                                node,
                            }) =>
                    {
                        expected.insert(meter.subject, ());
                    }
                    (true, _) => {
                        return violation(
                            5,
                            format!(
                                "public-pool job {} rank {} runs unbilled",
                                job.id, replica.rank
                            ),
                        )
                    }
                    (false, Some(_)) => {
                        return violation(
                            5,
                            format!(
                                "dedicated-pool job {} rank {} has a job meter",
                                job.id, replica.rank
                            ),
                        )
                    }
                    (false, None) => {}
                }
            }
        }
        for node in self.nodes.values() {
            let pay_per_use = node
                .pool
                .and_then(|pool| self.pools.get(&pool))
                .is_some_and(|pool| {
                    matches!(pool.kind, PoolKind::Dedicated { .. })
                        && pool.billing == BillingMode::PayPerUse
                });
            match (
                pay_per_use,
                node.meter.and_then(|meter| self.meters.get(&meter)),
            ) {
                (true, Some(meter)) if meter.subject == (BillSubject::Node { node: node.id }) => {
                    expected.insert(meter.subject, ());
                }
                (true, _) => {
                    return violation(
                        5,
                        format!("node {} of a pay-per-use pool runs unbilled", node.id),
                    )
                }
                (false, Some(_)) => {
                    return violation(
                        5,
                        format!("node {} has a meter outside a pay-per-use pool", node.id),
                    )
                }
                (false, None) => {}
            }
        }
        if expected.len() != self.meters.len() {
            return violation(
                5,
                format!(
                    "{} meters are open but {} billable subjects exist",
                    self.meters.len(),
                    expected.len()
                ),
            );
        }
        for meter in self.meters.values() {
            if meter.billed_micros != meter.accrued_micros(meter.billed_until_ms)
                || meter.billed_until_ms > self.now_ms.max(meter.started_at_ms)
            {
                return violation(
                    5,
                    format!(
                        "meter {} billed {} for its span, owes {}",
                        meter.id,
                        meter.billed_micros,
                        meter.accrued_micros(meter.billed_until_ms)
                    ),
                );
            }
        }
        let mut retained: BTreeMap<_, u64> = BTreeMap::new();
        for line in &self.bill_lines {
            if line.from_ms > line.to_ms {
                return violation(
                    5,
                    format!("a bill line of tenant {} runs backwards", line.tenant),
                );
            }
            *retained.entry(line.tenant).or_insert(0) += line.amount_micros;
        }
        for (tenant, total) in &self.billed_micros_total {
            let folded = self.folded_billed_micros.get(tenant).copied().unwrap_or(0);
            if retained.get(tenant).copied().unwrap_or(0) + folded != *total {
                return violation(
                    5,
                    format!("tenant {tenant} ledger total {total} does not match its lines"),
                );
            }
        }
        Ok(())
    }

    /// Invariant 6: a tenant's use equals what its jobs hold outside its own dedicated
    /// pools and never exceeds its quota; a queue's use equals what its jobs hold and
    /// never exceeds its limit, and no queue names a pool that is gone.
    fn check_quotas(&self) -> Result<(), InvariantViolation> {
        let mut held: BTreeMap<_, Resources> = BTreeMap::new();
        let mut queue_held: BTreeMap<(PoolId, &str), Resources> = BTreeMap::new();
        for job in self.jobs.values() {
            if let Some(queue) = &job.spec.queue {
                let entry = queue_held
                    .entry((job.spec.pool, queue.as_str()))
                    .or_insert(Resources::ZERO);
                *entry = entry.saturating_add(&job.held());
            }
            if !self.counts_against_quota(job.tenant, job.spec.pool) {
                continue;
            }
            let entry = held.entry(job.tenant).or_insert(Resources::ZERO);
            *entry = entry.saturating_add(&job.held());
        }
        for (pool, queues) in &self.pool_queues {
            if !self.pools.contains_key(pool) || queues.is_empty() {
                return violation(6, format!("queues of pool {pool} outlive it or are empty"));
            }
            for queue in queues.values() {
                let sum = queue_held
                    .get(&(*pool, queue.name.as_str()))
                    .copied()
                    .unwrap_or(Resources::ZERO);
                if sum != queue.used || !queue.used.fits_within(&queue.limit) {
                    return violation(
                        6,
                        format!(
                            "queue {} of pool {pool} used {} (limit {}) but its jobs hold {}",
                            queue.name, queue.used, queue.limit, sum
                        ),
                    );
                }
            }
        }
        for tenant in self.tenants.values() {
            let sum = held.get(&tenant.id).copied().unwrap_or(Resources::ZERO);
            if sum != tenant.used {
                return violation(
                    6,
                    format!(
                        "tenant {} used {} but its jobs hold {}",
                        tenant.id, tenant.used, sum
                    ),
                );
            }
            if !tenant.used.fits_within(&tenant.quota) {
                return violation(
                    6,
                    format!(
                        "tenant {} uses {} beyond quota {}",
                        tenant.id, tenant.used, tenant.quota
                    ),
                );
            }
        }
        Ok(())
    }

    /// Internal consistency of the derived indexes.
    fn check_indexes(&self) -> Result<(), InvariantViolation> {
        for (pool_id, members) in &self.pool_nodes {
            for node_id in members {
                if self.nodes.get(node_id).and_then(|node| node.pool) != Some(*pool_id) {
                    return violation(
                        0,
                        format!("pool index lists node {node_id} under pool {pool_id}"),
                    );
                }
            }
        }
        for node in self.nodes.values() {
            if let Some(pool_id) = node.pool {
                if !self
                    .pool_nodes
                    .get(&pool_id)
                    .is_some_and(|members| members.contains(&node.id))
                {
                    return violation(
                        0,
                        format!(
                            "node {} is in pool {} but not in its index",
                            node.id, pool_id
                        ),
                    );
                }
                let pool = self.pools.get(&pool_id);
                if let Some(network) = pool
                    .and_then(|pool| pool.network)
                    .and_then(|network| self.networks.get(&network))
                {
                    let address = node.ip_address.unwrap_or(0);
                    if network.addresses.get(&address) != Some(&node.id)
                        || !network.cidr.contains(address)
                    {
                        return violation(
                            0,
                            format!(
                                "node {} address is not allocated from its pool's network",
                                node.id
                            ),
                        );
                    }
                }
            }
        }
        for pool in self.pools.values() {
            let members = self
                .pool_nodes
                .get(&pool.id)
                .map_or(0, |members| members.len());
            if pool.status == corral_model::PoolStatus::Running
                && members as u32 != pool.wanted_nodes()
            {
                return violation(
                    0,
                    format!(
                        "pool {} wants {} nodes and has {}",
                        pool.id,
                        pool.wanted_nodes(),
                        members
                    ),
                );
            }
        }
        for (name, id) in &self.node_names {
            if self.nodes.get(id).map(|node| node.name.as_str()) != Some(name.as_str()) {
                return violation(0, format!("node name index is stale for {name}"));
            }
        }
        self.check_token_indexes()
    }

    /// Every token is found by its id and by each secret it accepts, and by nothing
    /// else; a node's credential names a node that exists.
    fn check_token_indexes(&self) -> Result<(), InvariantViolation> {
        let mut hashes = 0;
        for (name, token) in &self.tokens {
            let found_by_id = self.token_ids.get(&token.id) == Some(name);
            let found_by_hash = self.token_hashes.get(&token.hash) == Some(&token.id);
            if !found_by_id || !found_by_hash || token.name != *name {
                return violation(0, format!("token index is stale for {name}"));
            }
            hashes += 1;
            if let Some(previous) = &token.previous {
                if self.token_hashes.get(&previous.hash) != Some(&token.id) {
                    return violation(0, format!("rotated-out secret of {name} is not indexed"));
                }
                hashes += 1;
            }
            if let corral_model::TokenScope::Node(node) = token.scope {
                if !self.nodes.contains_key(&node) {
                    return violation(0, format!("token {name} names deleted node {node}"));
                }
            }
        }
        if self.token_ids.len() != self.tokens.len() || self.token_hashes.len() != hashes {
            return violation(0, "token indexes hold entries of no token".to_string());
        }
        Ok(())
    }
}
