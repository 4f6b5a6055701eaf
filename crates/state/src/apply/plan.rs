//! The plan applier: a scheduler plan is re-checked here, placement by placement, with
//! the same fit function the scheduler used, and committed per job all-or-nothing. A
//! stale or conflicting placement is rejected and its job stays queued.

use super::{require_system, Context, Handled};
use crate::apply::lifecycle::wants_queue;
use crate::state::State;
use corral_model::billing::{replica_rate_micros_per_hour, BillSubject};
use corral_model::fit::fit;
use corral_model::ids::{NodeId, PoolId};
use corral_model::limits::MAX_PLACEMENTS_PER_PLAN;
use corral_model::node::NodeAllocation;
use corral_model::queue::admits;
use corral_model::{
    Event, JobKind, JobState, NodeStatus, Placement, Rejection, ReplicaState, Resources,
};
use std::collections::BTreeMap;

impl State {
    pub(super) fn scheduler_plan(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        placements: &[Placement],
    ) -> Handled {
        require_system(context.principal)?;
        if placements.len() > MAX_PLACEMENTS_PER_PLAN {
            return Err(Rejection::limit(
                "placements per plan",
                MAX_PLACEMENTS_PER_PLAN,
            ));
        }
        let pool = self
            .pools
            .get(&pool_id)
            .ok_or_else(|| Rejection::not_found("pool", pool_id))?;
        if !pool.takes_work() {
            return Err(Rejection::state(
                "pool",
                pool_id,
                pool.status,
                "place work in",
            ));
        }
        // What the pool's nodes offer does not change while a plan is applied.
        let queue_capacity = self.queue_capacity(pool_id);
        for placement in placements {
            match self.check_placement(pool_id, placement, context.at_ms, &queue_capacity) {
                Ok(()) => self.commit_placement(context, placement),
                Err(reason) => {
                    let tenant = self.jobs.get(&placement.job).map(|job| job.tenant);
                    context.emit(
                        tenant,
                        Event::PlacementRejected {
                            job: placement.job,
                            reason,
                        },
                    );
                }
            }
        }
        Ok(None)
    }

    /// Whether a placement can be committed against the current state at `now_ms`; the
    /// reason if not. Checks the same things in the same way as the scheduler: among
    /// them, no replica goes onto a node that is lost (or otherwise not Available) at
    /// this index, and no job is placed during its disruption backoff. The tenant's
    /// quota counts outside its own dedicated pools only; a job of a queue must pass
    /// the borrowing rule (`corral_model::queue::admits`) against `queue_capacity`,
    /// what the pool's nodes offer (`State::queue_capacity`).
    pub fn check_placement(
        &self,
        pool_id: PoolId,
        placement: &Placement,
        now_ms: u64,
        queue_capacity: &Resources,
    ) -> Result<(), String> {
        let job = self
            .jobs
            .get(&placement.job)
            .ok_or_else(|| format!("job {} does not exist", placement.job))?;
        if job.spec.pool != pool_id {
            return Err(format!("job {} is not in pool {pool_id}", job.id));
        }
        if !wants_queue(job) {
            return Err(format!(
                "job {} is {:?} and waits for no placement",
                job.id, job.state
            ));
        }
        if let Some(not_before_ms) = job.not_before_ms.filter(|_| job.held_back_at(now_ms)) {
            return Err(format!(
                "job {} is held back after a disruption until {not_before_ms} ms",
                job.id
            ));
        }
        if placement.assignments.is_empty() {
            return Err("a placement must assign at least one replica".to_string());
        }
        let mut ranks: Vec<u32> = placement
            .assignments
            .iter()
            .map(|(rank, _)| *rank)
            .collect();
        ranks.sort_unstable();
        ranks.dedup();
        if ranks.len() != placement.assignments.len() {
            return Err("a rank is assigned twice".to_string());
        }
        for rank in &ranks {
            let replica = job
                .replicas
                .get(*rank as usize)
                .ok_or_else(|| format!("job {} has no rank {rank}", job.id))?;
            if replica.state != ReplicaState::Unplaced {
                return Err(format!("rank {rank} of job {} is already placed", job.id));
            }
        }
        if job.spec.kind.is_gang() && ranks.len() as u32 != job.unplaced_count() {
            return Err(format!(
                "job {} is a gang: all {} replicas must be placed at once",
                job.id,
                job.unplaced_count()
            ));
        }
        let tenant = self
            .tenants
            .get(&job.tenant)
            .ok_or_else(|| format!("tenant {} no longer exists", job.tenant))?;
        let wanted = job
            .spec
            .per_replica
            .checked_mul(ranks.len() as u32)
            .ok_or("request overflows")?;
        if self.counts_against_quota(tenant.id, pool_id) {
            let after = tenant.used.checked_add(&wanted).ok_or("usage overflows")?;
            if let Some(dimension) = after.first_exceeding(&tenant.quota) {
                return Err(format!(
                    "tenant {} quota exceeded on {dimension}",
                    tenant.id
                ));
            }
        }
        if let Some(queue) = &job.spec.queue {
            let (standings, position) = self.queue_standings(pool_id, queue);
            let position = position.ok_or_else(|| format!("queue {queue} does not exist"))?;
            admits(&standings, position, &wanted, queue_capacity)
                .map_err(|refusal| format!("queue {queue}: {refusal}"))?;
        }
        let mut taken: BTreeMap<NodeId, Resources> = BTreeMap::new();
        for (rank, node_id) in &placement.assignments {
            let node = self
                .nodes
                .get(node_id)
                .ok_or_else(|| format!("node {node_id} does not exist"))?;
            if node.status == NodeStatus::Abnormal {
                return Err(format!(
                    "rank {rank} on node {node_id}: node is not available (it was lost)"
                ));
            }
            let already = taken.get(node_id).copied().unwrap_or(Resources::ZERO);
            let free = node.free().checked_sub(&already).unwrap_or(Resources::ZERO);
            fit(node, &free, &job.spec)
                .map_err(|failure| format!("rank {rank} on node {node_id}: {failure}"))?;
            taken.insert(
                *node_id,
                already
                    .checked_add(&job.spec.per_replica)
                    .ok_or("request overflows")?,
            );
        }
        Ok(())
    }

    fn commit_placement(&mut self, context: &mut Context, placement: &Placement) {
        let job_id = placement.job;
        let job = &self.jobs[&job_id];
        let (tenant_id, pool_id, resources) = (job.tenant, job.spec.pool, job.spec.per_replica);
        let public = self.pools[&pool_id].is_public();
        let counts_against_quota = self.counts_against_quota(tenant_id, pool_id);
        let queue = job.spec.queue.clone();
        for (rank, node_id) in &placement.assignments {
            let node = self.nodes.get_mut(node_id).expect("checked above");
            let device_mask = node
                .pick_devices(resources.accelerators)
                .expect("free accelerators were checked by fit");
            node.devices_in_use |= device_mask;
            node.allocated = node
                .allocated
                .checked_add(&resources)
                .expect("checked by fit");
            assert!(
                node.allocated.fits_within(&node.capacity),
                "invariant 1: node {node_id} over capacity"
            );
            node.allocations.push(NodeAllocation {
                job: job_id,
                rank: *rank,
                resources,
                device_mask,
            });
            let share_ppm = resources.dominant_share_ppm(&node.capacity);
            let flavor_price = self
                .flavors
                .get(&node.flavor)
                .map_or(0, |flavor| flavor.price_micros_per_hour);
            let meter = public.then(|| {
                let rate = replica_rate_micros_per_hour(flavor_price, share_ppm);
                self.open_meter(
                    tenant_id,
                    pool_id,
                    BillSubject::JobReplica {
                        job: job_id,
                        rank: *rank,
                        node: *node_id,
                    },
                    rate,
                    context.at_ms,
                )
            });
            if counts_against_quota {
                let tenant = self.tenants.get_mut(&tenant_id).expect("checked above");
                tenant.used = tenant.used.checked_add(&resources).expect("checked above");
                assert!(
                    tenant.used.fits_within(&tenant.quota),
                    "invariant 6: tenant {tenant_id} over quota"
                );
            }
            self.account_queue_use(pool_id, queue.as_deref(), &resources, true);
            let replica = &mut self.job_mut(job_id).replicas[*rank as usize];
            replica.node = Some(*node_id);
            replica.last_node = Some(*node_id);
            replica.device_mask = device_mask;
            replica.state = ReplicaState::Assigned;
            replica.meter = meter;
            replica.assigned_at_ms = Some(context.at_ms);
            replica.placed_at_index = context.index;
            replica.master_port = None;
            context.emit(
                Some(tenant_id),
                Event::ReplicaAssigned {
                    job: job_id,
                    rank: *rank,
                    node: *node_id,
                },
            );
        }
        let job = self.job_mut(job_id);
        job.not_before_ms = None;
        match job.spec.kind {
            JobKind::Training { .. } | JobKind::Notebook { .. } => {
                self.transition(context, job_id, JobState::Running, "placed")
            }
            JobKind::Inference => self.sync_queue(job_id),
            JobKind::Workflow(_) => unreachable!("workflows are never queued"),
        }
    }
}
