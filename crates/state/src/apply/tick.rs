//! The metering tick, proposed periodically by the leader: bill open meters up to the
//! entry's time, renew or freeze prepaid pools, delete pools frozen past retention,
//! enforce max runtimes, auto-stop notebooks, and evict work at drain deadlines.
//! Everything time-driven in the state machine happens here, at the entry's `at_ms`.

use super::{require_system, Context, Handled};
use crate::state::State;
use corral_model::ids::{JobId, MeterId, NodeId, PoolId, TenantId};
use corral_model::limits::FROZEN_RETENTION_MS;
use corral_model::{BillingMode, Event, JobKind, JobState, PoolStatus};
use std::collections::BTreeMap;

/// Renewals of one pool in one tick; a tick long after expiry catches up over later ticks.
const MAX_RENEWALS_PER_TICK: u32 = 12;

impl State {
    pub(super) fn meter_tick(&mut self, context: &mut Context) -> Handled {
        require_system(context.principal)?;
        self.bill_open_meters(context);
        self.expire_prepaid_pools(context);
        self.enforce_runtime_limits(context);
        self.finish_expired_drains(context);
        Ok(None)
    }

    fn bill_open_meters(&mut self, context: &mut Context) {
        let meter_ids: Vec<MeterId> = self.meters.keys().copied().collect();
        let mut per_tenant_pool: BTreeMap<(TenantId, PoolId), u64> = BTreeMap::new();
        for meter_id in meter_ids {
            let amount = self.bill_meter(meter_id, context.at_ms);
            let meter = &self.meters[&meter_id];
            if amount > 0 {
                *per_tenant_pool
                    .entry((meter.tenant, meter.pool))
                    .or_insert(0) += amount;
            }
        }
        for ((tenant, pool), amount_micros) in per_tenant_pool {
            context.emit(
                Some(tenant),
                Event::Billed {
                    tenant,
                    pool,
                    amount_micros,
                },
            );
        }
    }

    fn expire_prepaid_pools(&mut self, context: &mut Context) {
        let pool_ids: Vec<PoolId> = self.pools.keys().copied().collect();
        for pool_id in pool_ids {
            let pool = &self.pools[&pool_id];
            let (
                BillingMode::Prepaid {
                    period_months,
                    auto_renew,
                },
                Some(owner),
            ) = (pool.billing, pool.owner())
            else {
                continue;
            };
            match pool.status {
                PoolStatus::Running if auto_renew => {
                    for _ in 0..MAX_RENEWALS_PER_TICK {
                        let paid_until = self.pools[&pool_id].paid_until_ms.unwrap_or(0);
                        if paid_until > context.at_ms {
                            break;
                        }
                        self.extend_prepaid(context, pool_id, owner, paid_until, period_months);
                    }
                }
                PoolStatus::Running
                    if pool
                        .paid_until_ms
                        .is_some_and(|until| until <= context.at_ms) =>
                {
                    self.freeze_pool(context, pool_id, owner);
                }
                PoolStatus::Frozen
                    if pool
                        .frozen_at_ms
                        .is_some_and(|at| at + FROZEN_RETENTION_MS <= context.at_ms) =>
                {
                    let active = self.active_jobs_in_pool(pool_id);
                    self.remove_pool(context, pool_id, Some(owner), &active);
                }
                _ => {}
            }
        }
    }

    /// An expired prepaid pool stops taking work and its running work is stopped.
    fn freeze_pool(&mut self, context: &mut Context, pool_id: PoolId, owner: TenantId) {
        let pool = self.pools.get_mut(&pool_id).expect("pool exists");
        let from = pool.status;
        pool.status = PoolStatus::Frozen;
        pool.frozen_at_ms = Some(context.at_ms);
        context.emit(
            Some(owner),
            Event::PoolStatusChanged {
                pool: pool_id,
                from,
                to: PoolStatus::Frozen,
            },
        );
        for job_id in self.active_jobs_in_pool(pool_id) {
            let job = &self.jobs[&job_id];
            if job.shutdown_target.is_some() || job.state == JobState::Stopped {
                continue;
            }
            let target = match job.spec.kind {
                JobKind::Training { .. } => JobState::Failed,
                _ => JobState::Stopped,
            };
            self.shut_down(context, job_id, target, "the pool's prepaid period expired");
        }
    }

    fn enforce_runtime_limits(&mut self, context: &mut Context) {
        let mut overdue: Vec<(JobId, JobState, &'static str)> = Vec::new();
        for job in self.jobs.values() {
            if job.shutdown_target.is_some() || job.state != JobState::Running {
                continue;
            }
            let Some(started) = job.started_at_ms else {
                continue;
            };
            let limit = match job.spec.kind {
                JobKind::Training { .. } => job
                    .spec
                    .max_runtime_ms
                    .map(|limit| (limit, JobState::Failed, "exceeded its max runtime")),
                JobKind::Notebook { auto_stop_after_ms } => {
                    auto_stop_after_ms.map(|limit| (limit, JobState::Stopped, "auto-stopped"))
                }
                _ => None,
            };
            if let Some((limit_ms, target, reason)) = limit {
                if started.saturating_add(limit_ms) <= context.at_ms {
                    overdue.push((job.id, target, reason));
                }
            }
        }
        for (job_id, target, reason) in overdue {
            // An earlier shutdown in this loop may have ended this job with its workflow.
            let still_due = self
                .jobs
                .get(&job_id)
                .is_some_and(|job| job.state == JobState::Running && job.shutdown_target.is_none());
            if !still_due {
                continue;
            }
            self.shut_down(context, job_id, target, reason);
        }
    }

    fn finish_expired_drains(&mut self, context: &mut Context) {
        let expired: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|node| {
                node.drain_deadline_ms
                    .is_some_and(|deadline| deadline <= context.at_ms)
            })
            .map(|node| node.id)
            .collect();
        for node_id in expired {
            self.evict_node(context, node_id, "evicted at the node's drain deadline");
            if let Some(node) = self.nodes.get_mut(&node_id) {
                node.drain_deadline_ms = None;
            }
        }
    }
}
