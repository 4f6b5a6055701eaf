//! Queues inside a pool: create, update, delete (`corral_model::queue`), and which queue
//! a submitted job goes to. The platform admin manages the public pool's queues, the
//! owner tenant (admin or operator) those of its dedicated pool.

use super::{Context, Handled};
use crate::state::State;
use corral_model::ids::{PoolId, TenantId};
use corral_model::limits::MAX_QUEUES_PER_POOL;
use corral_model::queue::guarantees_exceed;
use corral_model::{Event, Pool, Queue, QueueSpec, Rejection, Resources};

impl State {
    pub(super) fn queue_create(&mut self, context: &mut Context, spec: &QueueSpec) -> Handled {
        let pool = self.owned_pool(context.principal, spec.pool)?;
        let owner = pool.owner();
        spec.validate_shape()?;
        if self.queue_record(spec.pool, &spec.name).is_some() {
            return Err(Rejection::exists("queue", spec.name.clone()));
        }
        if self.queues_of_pool(spec.pool).count() >= MAX_QUEUES_PER_POOL {
            return Err(Rejection::limit("queues per pool", MAX_QUEUES_PER_POOL));
        }
        self.validate_queue_in_pool(spec, None)?;
        let queue = spec.to_queue(Resources::ZERO, context.at_ms);
        self.store_queue(queue);
        context.emit(
            owner,
            Event::QueueCreated {
                pool: spec.pool,
                name: spec.name.clone(),
            },
        );
        Ok(None)
    }

    pub(super) fn queue_update(&mut self, context: &mut Context, spec: &QueueSpec) -> Handled {
        let pool = self.owned_pool(context.principal, spec.pool)?;
        let owner = pool.owner();
        let existing = self
            .queue_record(spec.pool, &spec.name)
            .ok_or_else(|| Rejection::not_found("queue", &spec.name))?;
        spec.validate_shape()?;
        let used = existing.used;
        if let Some(dimension) = used.first_exceeding(&spec.limit) {
            return Err(Rejection::invalid(
                "limit",
                format!("the queue's running work already holds more {dimension}"),
            ));
        }
        self.validate_queue_in_pool(spec, Some(&spec.name))?;
        let created_at_ms = existing.created_at_ms;
        let queue = spec.to_queue(used, created_at_ms);
        self.store_queue(queue);
        context.emit(
            owner,
            Event::QueueUpdated {
                pool: spec.pool,
                name: spec.name.clone(),
            },
        );
        Ok(None)
    }

    pub(super) fn queue_delete(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        name: &str,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        let owner = pool.owner();
        if self.queue_record(pool_id, name).is_none() {
            return Err(Rejection::not_found("queue", name));
        }
        if let Some(job) = self.jobs.values().find(|job| {
            job.spec.pool == pool_id
                && job.spec.queue.as_deref() == Some(name)
                && !job.state.is_terminal()
        }) {
            return Err(Rejection::in_use("queue", name, format!("job {}", job.id)));
        }
        if let Some(queues) = self.pool_queues.get_mut(&pool_id) {
            queues.remove(name);
            if queues.is_empty() {
                self.pool_queues.remove(&pool_id);
            }
        }
        context.emit(
            owner,
            Event::QueueDeleted {
                pool: pool_id,
                name: name.to_string(),
            },
        );
        Ok(None)
    }

    /// Checks of a queue against its pool: members exist (and, in a dedicated pool, are
    /// its owner), the guarantees of the pool's queues together fit what its nodes
    /// offer, and at most one queue is the default. `replacing` names the queue an
    /// update replaces.
    fn validate_queue_in_pool(
        &self,
        spec: &QueueSpec,
        replacing: Option<&str>,
    ) -> Result<(), Rejection> {
        let pool = &self.pools[&spec.pool];
        for member in &spec.members {
            if !self.tenants.contains_key(member) {
                return Err(Rejection::not_found("tenant", member));
            }
            if !pool.admits_tenant(*member) {
                return Err(Rejection::invalid(
                    "members",
                    format!(
                        "pool {} is dedicated: only its owner's work runs there, not {member}'s",
                        pool.id
                    ),
                ));
            }
        }
        let others: Vec<&Queue> = self
            .queues_of_pool(spec.pool)
            .filter(|queue| Some(queue.name.as_str()) != replacing)
            .collect();
        if spec.default {
            if let Some(default) = others.iter().find(|queue| queue.default) {
                return Err(Rejection::invalid(
                    "default",
                    format!("queue {} is already the pool's default", default.name),
                ));
            }
        }
        let capacity = self.queue_capacity(spec.pool);
        let guarantees = others
            .iter()
            .map(|queue| queue.guarantee)
            .chain(std::iter::once(spec.guarantee));
        if let Some(dimension) = guarantees_exceed(guarantees, &capacity) {
            return Err(Rejection::invalid(
                "guarantee",
                format!(
                    "the pool's queues would be guaranteed more {dimension} than its nodes offer"
                ),
            ));
        }
        Ok(())
    }

    fn store_queue(&mut self, queue: Queue) {
        self.pool_queues
            .entry(queue.pool)
            .or_default()
            .insert(queue.name.clone(), queue);
    }

    /// The queue a job of `tenant` naming `named` goes to in `pool`: none in a pool
    /// without queues, the named one if the tenant is a member, else the pool's default.
    pub(crate) fn queue_for_job(
        &self,
        pool: &Pool,
        tenant: TenantId,
        named: Option<&str>,
    ) -> Result<Option<&Queue>, Rejection> {
        if !self.pool_has_queues(pool.id) {
            return match named {
                Some(name) => Err(Rejection::not_found("queue", name)),
                None => Ok(None),
            };
        }
        let queue = match named {
            Some(name) => self
                .queue_record(pool.id, name)
                .ok_or_else(|| Rejection::not_found("queue", name))?,
            None => self
                .queues_of_pool(pool.id)
                .find(|queue| queue.default)
                .ok_or_else(|| {
                    Rejection::invalid(
                        "queue",
                        format!(
                            "pool {} has queues and none is the default: name one",
                            pool.id
                        ),
                    )
                })?,
        };
        if !queue.admits_member(tenant, pool.owner()) {
            return Err(Rejection::denied(format!(
                "tenant {tenant} is not a member of queue {}",
                queue.name
            )));
        }
        Ok(Some(queue))
    }

    /// Count `resources` taken (`add`) or released by a job of `pool` in `queue`.
    pub(crate) fn account_queue_use(
        &mut self,
        pool: PoolId,
        queue: Option<&str>,
        resources: &Resources,
        add: bool,
    ) {
        let Some(name) = queue else {
            return;
        };
        let Some(record) = self
            .pool_queues
            .get_mut(&pool)
            .and_then(|queues| queues.get_mut(name))
        else {
            return;
        };
        record.used = if add {
            record
                .used
                .checked_add(resources)
                .expect("queue usage overflow")
        } else {
            record
                .used
                .checked_sub(resources)
                .expect("queue usage underflow")
        };
    }
}
