//! One scheduling round over one pool: take the queued jobs in round order (`job_order`),
//! skip those without quota, place each whole or not at all (gangs, notebooks) or
//! partly (inference), make the first job that does not fit the head with a
//! reservation, and from then on backfill only where the head is not delayed.
//!
//! Every chosen node is confirmed with `corral_model::fit::fit`, the function the plan
//! applier uses, against the round's running tally of free capacity.

use crate::backfill::{BackfillGuard, ReservationConstraint};
use crate::capacity::{saturating_sub, times};
use crate::failure_memo::FailureMemo;
use crate::fair_share::{tenant_allocations, FairShareOrder};
use crate::gang_placement::plan_gang;
use crate::job_order::{read_queue, JobOrder, QueuedJob};
use crate::options::RoundOptions;
use crate::placement_class::{ClassId, PlacementClasses};
use crate::plan::{HeadJob, Plan};
use crate::pool_nodes::{NodeSlot, PoolNodes};
use crate::queues::{Borrowing, QueueLedger};
use crate::quota::QuotaLedger;
use crate::release_schedule::{release_if_placed_at, releases_of_running_work, ReleaseEvent};
use crate::reservation::{plan_reservation, HeadRequest};
use crate::spread_placement::next_spread_node;
use corral_model::fit::fit;
use corral_model::ids::PoolId;
use corral_model::{Job, Placement, ReplicaState, Resources};
use corral_state::State;
use std::collections::BTreeMap;

/// Plan one round for `pool`. Returns an empty plan when the pool does not exist, takes
/// no work, or has nothing queued.
pub fn plan_round(state: &State, pool: PoolId, options: &RoundOptions) -> Plan {
    plan_pool(state, pool, options, &mut QuotaLedger::new(state))
}

/// Plan one round for every pool with queued work, in pool id order. A tenant's quota
/// spans pools, so what an earlier plan places counts against the quota seen by later
/// ones: applied in this order, the plans do not conflict with each other. Plans
/// without placements are included for their diagnostics; propose only the non-empty
/// ones.
pub fn plan_all_pools(state: &State, options: &RoundOptions) -> Vec<Plan> {
    let mut quota = QuotaLedger::new(state);
    let pools: Vec<PoolId> = state.pools_with_queued_work().collect();
    pools
        .into_iter()
        .map(|pool| plan_pool(state, pool, options, &mut quota))
        .collect()
}

fn plan_pool<'a>(
    state: &'a State,
    pool: PoolId,
    options: &RoundOptions,
    quota: &mut QuotaLedger<'a>,
) -> Plan {
    let Some(pool_record) = state.pool(pool) else {
        return Plan::nothing_fits(pool);
    };
    if !pool_record.takes_work() || state.queue_length(pool) == 0 {
        return Plan::nothing_fits(pool);
    }
    let mut nodes = PoolNodes::build(state, pool, &options.unavailable_nodes);
    let mut classes = PlacementClasses::default();
    let clock_ms = options.now_ms.unwrap_or(state.now_ms()).max(state.now_ms());
    let queues = QueueLedger::build(state, pool);
    let (queue, smallest_request) =
        read_queue(state, pool, &nodes, &mut classes, queues.as_ref(), clock_ms);
    nodes.fill_buckets(smallest_request);
    let nothing_fits_any_node = !nodes.has_usable_node();
    let order = if pool_record.is_public() {
        JobOrder::FairShare(FairShareOrder::new(
            queue.iter().map(|queued| queued.tenant),
            tenant_allocations(state, &nodes),
            *nodes.total_capacity(),
        ))
    } else {
        JobOrder::Queue(0..queue.len())
    };
    let planner = RoundPlanner {
        state,
        pool,
        queues,
        borrowing: Borrowing::No,
        deferred: Vec::new(),
        current_queue: None,
        now_ms: state.now_ms(),
        max_placements: options.effective_max_placements(),
        nodes,
        classes,
        queue,
        memo: FailureMemo::default(),
        quota,
        guard: None,
        releases_this_round: Vec::new(),
        plan: Plan::empty(pool),
    };
    let mut plan = planner.run(order);
    plan.diagnostics.nothing_fits_any_node = nothing_fits_any_node;
    debug_assert!(
        !nothing_fits_any_node || plan.is_empty(),
        "a pool where nothing fits got placements"
    );
    plan
}

/// What happened to one job.
enum JobOutcome {
    Placed {
        replicas: u32,
    },
    NoQuota,
    /// Its queue is at its limit, or has nothing to borrow.
    NoQueueRoom,
    /// It would have to borrow: considered again in the borrowing pass.
    Deferred,
    DoesNotFit,
}

struct RoundPlanner<'a, 'q> {
    state: &'a State,
    pool: PoolId,
    /// The pool's queues (`None`: it has none).
    queues: Option<QueueLedger<'a>>,
    /// Whether this pass may place beyond a queue's guarantee.
    borrowing: Borrowing,
    /// Jobs the first pass left for the borrowing pass, in round order.
    deferred: Vec<usize>,
    /// The queue of the job being placed.
    current_queue: Option<usize>,
    now_ms: u64,
    max_placements: usize,
    nodes: PoolNodes<'a>,
    classes: PlacementClasses<'a>,
    queue: Vec<QueuedJob<'a>>,
    memo: FailureMemo,
    quota: &'q mut QuotaLedger<'a>,
    /// Set once the head has a reservation.
    guard: Option<BackfillGuard>,
    /// Known releases of what this round placed, until the head is found.
    releases_this_round: Vec<ReleaseEvent>,
    plan: Plan,
}

impl<'a, 'q> RoundPlanner<'a, 'q> {
    fn run(mut self, order: JobOrder) -> Plan {
        self.pass(order);
        if self.queues.is_some() && !self.deferred.is_empty() {
            self.borrowing = Borrowing::Yes;
            let deferred = std::mem::take(&mut self.deferred);
            self.pass(JobOrder::Listed(deferred.into_iter()));
        }
        let diagnostics = &mut self.plan.diagnostics;
        diagnostics.jobs_placed = self.plan.placements.len();
        diagnostics.replicas_placed = self
            .plan
            .placements
            .iter()
            .map(|placement| placement.assignments.len())
            .sum();
        self.plan
    }

    /// One pass over the jobs `order` hands out.
    fn pass(&mut self, mut order: JobOrder) {
        while self.plan.placements.len() < self.max_placements {
            if self.pool_is_full() {
                self.plan.diagnostics.stopped_with_pool_full = true;
                break;
            }
            let Some(position) = order.next_job() else {
                break;
            };
            self.plan.diagnostics.jobs_considered += 1;
            match self.consider(position) {
                JobOutcome::Placed { replicas } => {
                    let queued = &self.queue[position];
                    order.record_placement(queued.tenant, &times(&queued.per_replica, replicas));
                }
                JobOutcome::NoQuota => self.plan.diagnostics.jobs_skipped_for_quota += 1,
                JobOutcome::NoQueueRoom => self.plan.diagnostics.jobs_skipped_for_queue += 1,
                JobOutcome::Deferred => self.deferred.push(position),
                JobOutcome::DoesNotFit => {
                    self.plan.diagnostics.jobs_not_fitting += 1;
                    if self.plan.diagnostics.head.is_none() {
                        self.make_head(position);
                    }
                }
            }
        }
    }

    /// No node has room for the smallest queued request and the head is known: the
    /// rest of the queue cannot be placed and needs no look.
    fn pool_is_full(&self) -> bool {
        self.plan.diagnostics.head.is_some() && !self.nodes.has_usable_node()
    }

    fn consider(&mut self, position: usize) -> JobOutcome {
        let queued = &self.queue[position];
        let (job, class, per_replica, spreads) =
            (queued.job, queued.class, queued.per_replica, queued.spreads);
        let mut allowed = self
            .quota
            .replicas_allowed(queued.tenant, self.pool, &per_replica);
        if allowed == 0 {
            return JobOutcome::NoQuota;
        }
        self.current_queue = queued.queue;
        if let (Some(position), Some(ledger)) = (queued.queue, &self.queues) {
            let unplaced = job.unplaced_count();
            let needed = if spreads { 1 } else { unplaced };
            let up_to = unplaced.min(allowed);
            let in_queue = ledger.replicas_allowed(position, &per_replica, up_to, self.borrowing);
            if in_queue < needed {
                let could_borrow = self.borrowing == Borrowing::No
                    && ledger.replicas_allowed(position, &per_replica, needed, Borrowing::Yes)
                        >= needed;
                return if could_borrow {
                    JobOutcome::Deferred
                } else {
                    JobOutcome::NoQueueRoom
                };
            }
            allowed = allowed.min(in_queue);
        }
        let constraint = self.constraint_for(queued.runtime_limit_ms);
        // A job needs at least one replica placed to progress, and never more than its
        // replica count; when quota is not in question and not even one replica fits,
        // the job cannot fit, which is known without reading the job itself.
        let quota_is_no_obstacle = spreads || allowed >= queued.replicas;
        if quota_is_no_obstacle
            && self
                .memo
                .known_not_to_fit(class, per_replica, constraint, 1)
        {
            return JobOutcome::DoesNotFit;
        }
        let unplaced = job.unplaced_count();
        let wanted = if spreads {
            unplaced.min(allowed)
        } else {
            unplaced
        };
        if wanted == 0 || wanted > allowed {
            return JobOutcome::NoQuota;
        }
        let fewest_to_progress = if spreads { 1 } else { wanted };
        if self
            .memo
            .known_not_to_fit(class, per_replica, constraint, fewest_to_progress)
        {
            return JobOutcome::DoesNotFit;
        }
        let placed = if spreads {
            self.place_spread(job, class, wanted, constraint)
        } else {
            self.place_gang(job, class, wanted, constraint)
        };
        if placed == 0 {
            self.memo
                .remember_failure(class, per_replica, constraint, fewest_to_progress);
            return JobOutcome::DoesNotFit;
        }
        JobOutcome::Placed { replicas: placed }
    }

    fn constraint_for(&self, runtime_limit_ms: Option<u64>) -> ReservationConstraint {
        self.guard
            .as_ref()
            .map_or(ReservationConstraint::Free, |guard| {
                guard.constraint_for(runtime_limit_ms, self.now_ms)
            })
    }

    /// What a job under `constraint` may use on a node now.
    fn usable(&self, slot: NodeSlot, constraint: ReservationConstraint) -> Resources {
        let free = self.nodes.free(slot);
        match &self.guard {
            Some(guard) => guard.usable(slot, free, constraint),
            None => *free,
        }
    }

    /// All `wanted` replicas on as few nodes as possible, or none.
    fn place_gang(
        &mut self,
        job: &Job,
        class: ClassId,
        wanted: u32,
        constraint: ReservationConstraint,
    ) -> u32 {
        let per_replica = job.spec.per_replica;
        let chosen = plan_gang(
            &self.nodes,
            self.classes.class(class),
            &per_replica,
            wanted,
            |slot| Some(self.usable(slot, constraint)),
        );
        let Some(chosen) = chosen else {
            return 0;
        };
        if !self.fit_confirms(job, &chosen) {
            return 0;
        }
        let mut ranks = unplaced_ranks(job);
        let mut assignments = Vec::with_capacity(wanted as usize);
        for (slot, replicas) in &chosen {
            let node = self.nodes.node(*slot).id;
            assignments.extend(
                ranks
                    .by_ref()
                    .take(*replicas as usize)
                    .map(|rank| (rank, node)),
            );
            self.commit(job, *slot, *replicas, constraint);
        }
        self.plan.placements.push(Placement {
            job: job.id,
            assignments,
        });
        wanted
    }

    /// Up to `wanted` replicas, one at a time, spread over nodes.
    fn place_spread(
        &mut self,
        job: &Job,
        class: ClassId,
        wanted: u32,
        constraint: ReservationConstraint,
    ) -> u32 {
        let mut replicas_on_node: BTreeMap<NodeSlot, u32> = BTreeMap::new();
        for node in job.replicas.iter().filter_map(|replica| replica.node) {
            if let Some(slot) = self.nodes.slot_of(node) {
                *replicas_on_node.entry(slot).or_default() += 1;
            }
        }
        let mut assignments = Vec::new();
        for rank in unplaced_ranks(job).take(wanted as usize) {
            let found = next_spread_node(
                &self.nodes,
                self.classes.class(class),
                &job.spec.per_replica,
                &replicas_on_node,
                |slot| Some(self.usable(slot, constraint)),
            );
            let Some(slot) = found.filter(|slot| self.fit_confirms(job, &[(*slot, 1)])) else {
                self.memo
                    .remember_failure(class, job.spec.per_replica, constraint, 1);
                break;
            };
            assignments.push((rank, self.nodes.node(slot).id));
            *replicas_on_node.entry(slot).or_default() += 1;
            self.commit(job, slot, 1, constraint);
        }
        let placed = assignments.len() as u32;
        if placed > 0 {
            self.plan.placements.push(Placement {
                job: job.id,
                assignments,
            });
        }
        placed
    }

    /// Check every chosen replica with the shared fit function, against the node's free
    /// tally less the replicas before it on the same node.
    fn fit_confirms(&self, job: &Job, chosen: &[(NodeSlot, u32)]) -> bool {
        chosen.iter().all(|(slot, replicas)| {
            let node = self.nodes.node(*slot);
            let free = self.nodes.free(*slot);
            (0..*replicas).all(|before| {
                let left = saturating_sub(free, &times(&job.spec.per_replica, before));
                fit(node, &left, &job.spec).is_ok()
            })
        })
    }

    /// Book `replicas` replicas of the job on the node.
    fn commit(
        &mut self,
        job: &Job,
        slot: NodeSlot,
        replicas: u32,
        constraint: ReservationConstraint,
    ) {
        let resources = times(&job.spec.per_replica, replicas);
        self.nodes.take(slot, &resources);
        if let Some(guard) = &mut self.guard {
            guard.consume(slot, &resources, constraint);
        }
        self.quota.record(job.tenant, self.pool, &resources);
        if let (Some(position), Some(ledger)) = (self.current_queue, &mut self.queues) {
            ledger.record(position, &resources);
        }
        if self.plan.diagnostics.head.is_none() {
            if let Some(at_ms) = release_if_placed_at(&job.spec, self.now_ms) {
                self.releases_this_round.push(ReleaseEvent {
                    at_ms,
                    slot,
                    resources,
                });
            }
        }
    }

    /// The first job that did not fit becomes the head; reserve for it.
    fn make_head(&mut self, position: usize) {
        let queued = &self.queue[position];
        let mut releases = releases_of_running_work(self.state, &self.nodes, self.now_ms);
        releases.append(&mut self.releases_this_round);
        let request = HeadRequest {
            job: queued.job.id,
            class: self.classes.class(queued.class),
            per_replica: queued.per_replica,
            replicas: queued.job.unplaced_count(),
        };
        let reserved = plan_reservation(&self.nodes, &request, releases, self.now_ms);
        let job = queued.job.id;
        let reservation = reserved.map(|plan| {
            self.guard = Some(plan.guard);
            plan.reservation
        });
        self.plan.diagnostics.head = Some(HeadJob {
            job,
            placements_before_head: self.plan.placements.len(),
            reservation,
        });
    }
}

fn unplaced_ranks(job: &Job) -> impl Iterator<Item = u32> + '_ {
    job.replicas
        .iter()
        .filter(|replica| replica.state == ReplicaState::Unplaced)
        .map(|replica| replica.rank)
}
