//! The queues of a pool as a principal may see them, with what each holds, borrows and
//! lends and how many of its jobs wait (`corral queue list` and `corral queue status`).

use crate::queries::QueryError;
use crate::state::State;
use corral_model::ids::PoolId;
use corral_model::queue::{lent, QueueStanding};
use corral_model::{Principal, Queue, Reads, Resources};

/// One queue and its standing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueView {
    /// The queue; a tenant sees itself among the members, no other tenant.
    pub queue: Queue,
    pub borrowed: Resources,
    pub lent: Resources,
    /// Its jobs waiting for placement.
    pub pending_jobs: u64,
}

impl State {
    /// The queues of `pool` in name order, if the principal may see the pool (a tenant
    /// sees the public pool's and its own pools' queues).
    pub fn list_queues(
        &self,
        principal: &Principal,
        pool: PoolId,
    ) -> Result<Vec<QueueView>, QueryError> {
        self.visible_pool(principal, pool)?;
        let standings: Vec<QueueStanding> = self
            .queues_of_pool(pool)
            .map(|queue| QueueStanding {
                guarantee: queue.guarantee,
                limit: queue.limit,
                used: queue.used,
            })
            .collect();
        let lent_by_queue = lent(&standings, &self.queue_capacity(pool));
        let mut pending: std::collections::BTreeMap<&str, u64> = Default::default();
        for job in self.queue(pool).filter_map(|key| self.job(key.job)) {
            if let Some(name) = &job.spec.queue {
                *pending.entry(name.as_str()).or_default() += 1;
            }
        }
        Ok(self
            .queues_of_pool(pool)
            .zip(lent_by_queue)
            .map(|(queue, lent)| {
                let mut shown = queue.clone();
                if let Reads::Tenant(tenant) = principal.reads() {
                    shown.members.retain(|member| *member == tenant);
                }
                QueueView {
                    borrowed: queue.borrowed(),
                    lent,
                    pending_jobs: pending.get(queue.name.as_str()).copied().unwrap_or(0),
                    queue: shown,
                }
            })
            .collect())
    }
}
