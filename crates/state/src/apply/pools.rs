//! Pool commands: create (claiming free nodes), scale out or in, delete, switch job
//! types, request a driver upgrade, renew a prepaid period.

use super::{require_admin, require_owner, Context, Created, Handled};
use crate::state::State;
use corral_model::command::{PoolCreate, PoolKindRequest};
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::limits::{
    MAX_DEDICATED_POOLS_PER_TENANT, MAX_FLAVORS_PER_POOL, MAX_NODES_PER_POOL_FLAVOR,
    MAX_PREPAID_MONTHS, MAX_TAGS_PER_POOL, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES, MONTH_MS,
};
use corral_model::names::{validate_description, validate_name, validate_text};
use corral_model::pool::{DriverUpgrade, UpgradeMode};
use corral_model::{
    BillingMode, DriverSpec, Event, JobState, JobType, NodeStatus, Pool, PoolFlavor, PoolKind,
    PoolStatus, Principal, Reads, Rejection,
};
use std::collections::{BTreeMap, BTreeSet};

impl State {
    /// Find a pool the principal may see; others' dedicated pools are not found.
    pub(crate) fn visible_pool(
        &self,
        principal: &Principal,
        pool_id: PoolId,
    ) -> Result<&Pool, Rejection> {
        let pool = self
            .pools
            .get(&pool_id)
            .ok_or_else(|| Rejection::not_found("pool", pool_id))?;
        let visible = match (principal.reads(), pool.kind) {
            (Reads::Everything, _) | (Reads::Tenant(_), PoolKind::Public) => true,
            (Reads::Tenant(tenant), PoolKind::Dedicated { owner }) => tenant == owner,
            (Reads::Nothing, _) => false,
        };
        if visible {
            Ok(pool)
        } else {
            Err(Rejection::not_found("pool", pool_id))
        }
    }

    /// Find a pool the principal may change: admin, or the owner of a dedicated pool.
    pub(super) fn owned_pool(
        &self,
        principal: &Principal,
        pool_id: PoolId,
    ) -> Result<&Pool, Rejection> {
        let pool = self.visible_pool(principal, pool_id)?;
        match pool.kind {
            PoolKind::Public => require_admin(principal)?,
            PoolKind::Dedicated { owner } => require_owner(principal, owner, "pool", pool_id)?,
        }
        Ok(pool)
    }

    /// Free nodes of a flavor in a zone, in id order: Available, in no pool.
    fn free_nodes(&self, flavor: &str, zone: &str) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|node| {
                node.pool.is_none()
                    && node.status == NodeStatus::Available
                    && node.flavor == flavor
                    && node.zone == zone
            })
            .map(|node| node.id)
            .collect()
    }

    pub(super) fn pool_create(&mut self, context: &mut Context, request: &PoolCreate) -> Handled {
        let kind = self.validate_pool_kind(context.principal, request)?;
        validate_name("name", &request.name)?;
        validate_description(&request.description)?;
        if self.pools.values().any(|pool| pool.name == request.name) {
            return Err(Rejection::exists("pool", request.name.clone()));
        }
        self.validate_pool_flavors(&request.flavors)?;
        if request.job_types.is_empty() {
            return Err(Rejection::invalid(
                "job_types",
                "enable at least one job type",
            ));
        }
        validate_tags(&request.tags)?;
        super::nodes::validate_driver(
            "driver.gpu_driver_version",
            &request.driver.gpu_driver_version,
        )?;
        super::nodes::validate_driver(
            "driver.npu_driver_version",
            &request.driver.npu_driver_version,
        )?;
        validate_billing(&request.billing)?;
        let mut claimed = Vec::new();
        for pool_flavor in &request.flavors {
            let free = self.free_nodes(&pool_flavor.flavor, &pool_flavor.zone);
            if (free.len() as u64) < u64::from(pool_flavor.node_count) {
                return Err(Rejection::InsufficientNodes {
                    flavor: pool_flavor.flavor.clone(),
                    zone: pool_flavor.zone.clone(),
                    wanted: pool_flavor.node_count,
                    free: free.len() as u32,
                });
            }
            claimed.extend(free.into_iter().take(pool_flavor.node_count as usize));
        }
        if let Some(network_id) = request.network {
            self.check_network_room(network_id, claimed.len())?;
        }

        self.counters.pool += 1;
        let id = PoolId(self.counters.pool);
        let owner = match kind {
            PoolKind::Dedicated { owner } => Some(owner),
            PoolKind::Public => None,
        };
        let pool = Pool {
            id,
            name: request.name.clone(),
            description: request.description.clone(),
            kind,
            status: PoolStatus::Running,
            flavors: request.flavors.clone(),
            job_types: request.job_types.clone(),
            network: request.network,
            driver: request.driver.clone(),
            billing: request.billing,
            paid_until_ms: None,
            frozen_at_ms: None,
            tags: request.tags.clone(),
            pending_upgrade: None,
            created_at_ms: context.at_ms,
        };
        self.pools.insert(id, pool);
        if kind == PoolKind::Public {
            self.public_pool = Some(id);
        }
        context.emit(owner, Event::PoolCreated { pool: id });
        for node_id in claimed {
            self.node_join_pool(context, node_id, id);
        }
        if let (BillingMode::Prepaid { period_months, .. }, Some(owner)) = (request.billing, owner)
        {
            let until = context.at_ms + u64::from(period_months) * MONTH_MS;
            let amount = self
                .pool_price_per_hour(id)
                .saturating_mul(u64::from(period_months) * MONTH_MS / 3_600_000);
            self.charge_prepaid(context, id, owner, context.at_ms, until, amount);
            self.pools
                .get_mut(&id)
                .expect("just inserted")
                .paid_until_ms = Some(until);
        }
        self.request_upgrade_if_drivers_differ(context, id);
        Ok(Some(Created::Pool(id)))
    }

    fn validate_pool_kind(
        &self,
        principal: &Principal,
        request: &PoolCreate,
    ) -> Result<PoolKind, Rejection> {
        match request.kind {
            PoolKindRequest::Public => {
                require_admin(principal)?;
                if self.public_pool.is_some() {
                    return Err(Rejection::exists("public pool", "public"));
                }
                if request.network.is_some() {
                    return Err(Rejection::invalid(
                        "network",
                        "the public pool has no tenant network",
                    ));
                }
                if request.driver != DriverSpec::default() {
                    return Err(Rejection::invalid(
                        "driver",
                        "the public pool's node runtime is fixed",
                    ));
                }
                if request.billing != BillingMode::PayPerUse {
                    return Err(Rejection::invalid(
                        "billing",
                        "the public pool bills each job pay-per-use",
                    ));
                }
                Ok(PoolKind::Public)
            }
            PoolKindRequest::Dedicated { owner } => {
                require_owner(principal, owner, "tenant", owner)?;
                if !self.tenants.contains_key(&owner) {
                    return Err(Rejection::not_found("tenant", owner));
                }
                let owned = self
                    .pools
                    .values()
                    .filter(|pool| pool.owner() == Some(owner))
                    .count();
                if owned >= MAX_DEDICATED_POOLS_PER_TENANT {
                    return Err(Rejection::limit(
                        "dedicated pools per tenant",
                        MAX_DEDICATED_POOLS_PER_TENANT,
                    ));
                }
                let Some(network_id) = request.network else {
                    return Err(Rejection::invalid(
                        "network",
                        "a dedicated pool needs a network of its owner",
                    ));
                };
                match self.networks.get(&network_id) {
                    Some(network) if network.tenant == owner => Ok(PoolKind::Dedicated { owner }),
                    _ => Err(Rejection::not_found("network", network_id)),
                }
            }
        }
    }

    fn validate_pool_flavors(&self, flavors: &[PoolFlavor]) -> Result<(), Rejection> {
        if flavors.is_empty() {
            return Err(Rejection::invalid(
                "flavors",
                "a pool needs at least one flavor",
            ));
        }
        if flavors.len() > MAX_FLAVORS_PER_POOL {
            return Err(Rejection::limit("flavors per pool", MAX_FLAVORS_PER_POOL));
        }
        let mut seen = BTreeSet::new();
        let mut architectures = BTreeSet::new();
        for pool_flavor in flavors {
            let flavor = self
                .flavors
                .get(&pool_flavor.flavor)
                .ok_or_else(|| Rejection::not_found("flavor", &pool_flavor.flavor))?;
            validate_name("zone", &pool_flavor.zone)?;
            if pool_flavor.node_count == 0 || pool_flavor.node_count > MAX_NODES_PER_POOL_FLAVOR {
                return Err(Rejection::invalid(
                    "flavors.node_count",
                    "must be 1..=10000",
                ));
            }
            if !seen.insert((pool_flavor.flavor.as_str(), pool_flavor.zone.as_str())) {
                return Err(Rejection::invalid(
                    "flavors",
                    format!(
                        "{} in {} is listed twice",
                        pool_flavor.flavor, pool_flavor.zone
                    ),
                ));
            }
            architectures.insert(flavor.cpu_architecture.as_str());
        }
        if architectures.len() > 1 {
            return Err(Rejection::invalid(
                "flavors",
                "all flavors of a pool must share one CPU architecture",
            ));
        }
        Ok(())
    }

    fn check_network_room(
        &self,
        network_id: corral_model::NetworkId,
        extra_nodes: usize,
    ) -> Result<(), Rejection> {
        let network = &self.networks[&network_id];
        let usable = u64::from(network.cidr.last_host() - network.cidr.first_host() + 1);
        if network.addresses.len() as u64 + extra_nodes as u64 > usable {
            return Err(Rejection::invalid(
                "network",
                format!(
                    "{} has no free addresses for {extra_nodes} more nodes",
                    network.cidr
                ),
            ));
        }
        Ok(())
    }

    /// Sum of the hourly prices of the pool's nodes.
    fn pool_price_per_hour(&self, pool_id: PoolId) -> u64 {
        self.pool_nodes(pool_id)
            .map(|node| {
                self.flavors
                    .get(&node.flavor)
                    .map_or(0, |flavor| flavor.price_micros_per_hour)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// A pool created with a custom driver spec on nodes that run other versions gets a
    /// secure upgrade request, carried out by the leader's upgrade loop.
    fn request_upgrade_if_drivers_differ(&mut self, context: &mut Context, pool_id: PoolId) {
        let target = self.pools[&pool_id].driver.clone();
        let differs = self.pool_nodes(pool_id).any(|node| {
            target
                .gpu_driver_version
                .as_ref()
                .is_some_and(|version| node.gpu_driver_version.as_ref() != Some(version))
                || target
                    .npu_driver_version
                    .as_ref()
                    .is_some_and(|version| node.npu_driver_version.as_ref() != Some(version))
        });
        if differs {
            // A replaced upgrade releases the nodes the old one isolated.
            self.clear_pool_upgrades(pool_id);
            let owner = self.pools[&pool_id].owner();
            let pool = self.pools.get_mut(&pool_id).expect("pool exists");
            // The pool was made with these drivers: a cancel leaves them declared.
            pool.pending_upgrade = Some(DriverUpgrade {
                previous: target.clone(),
                target,
                mode: UpgradeMode::Secure,
                batch_size: 1,
                requested_at_ms: context.at_ms,
            });
            context.emit(owner, Event::PoolDriverUpgradeRequested { pool: pool_id });
        }
    }

    pub(super) fn pool_scale(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        flavor: &str,
        zone: &str,
        node_count: u32,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        if pool.status != PoolStatus::Running {
            return Err(Rejection::state("pool", pool_id, pool.status, "scale"));
        }
        let Some(entry_index) = pool
            .flavors
            .iter()
            .position(|entry| entry.flavor == flavor && entry.zone == zone)
        else {
            return Err(Rejection::not_found(
                "pool flavor",
                format!("{flavor} in {zone}"),
            ));
        };
        if node_count > MAX_NODES_PER_POOL_FLAVOR {
            return Err(Rejection::invalid("node_count", "must be at most 10000"));
        }
        let current = pool.flavors[entry_index].node_count;
        if node_count == current {
            return Err(Rejection::invalid(
                "node_count",
                format!("the pool already has {current} nodes of {flavor} in {zone}"),
            ));
        }
        let owner = pool.owner();
        let billing = pool.billing;
        let paid_until = pool.paid_until_ms;
        let total = pool.wanted_nodes();
        if node_count > current {
            let wanted = node_count - current;
            let free = self.free_nodes(flavor, zone);
            if (free.len() as u64) < u64::from(wanted) {
                return Err(Rejection::InsufficientNodes {
                    flavor: flavor.to_string(),
                    zone: zone.to_string(),
                    wanted,
                    free: free.len() as u32,
                });
            }
            if let Some(network_id) = pool.network {
                self.check_network_room(network_id, wanted as usize)?;
            }
            let claimed: Vec<NodeId> = free.into_iter().take(wanted as usize).collect();
            for node_id in &claimed {
                self.node_join_pool(context, *node_id, pool_id);
            }
            // A prepaid pool pays for the added nodes up to the end of the current period.
            if let (BillingMode::Prepaid { .. }, Some(owner), Some(until)) =
                (billing, owner, paid_until)
            {
                let price: u64 = claimed
                    .iter()
                    .map(|node_id| {
                        self.flavors
                            .get(&self.nodes[node_id].flavor)
                            .map_or(0, |flavor| flavor.price_micros_per_hour)
                    })
                    .fold(0u64, u64::saturating_add);
                let remaining_ms = until.saturating_sub(context.at_ms);
                let amount =
                    u64::try_from(u128::from(price) * u128::from(remaining_ms) / 3_600_000)
                        .unwrap_or(u64::MAX);
                self.charge_prepaid(context, pool_id, owner, context.at_ms, until, amount);
            }
        } else {
            let removing = current - node_count;
            if total - removing == 0 {
                return Err(Rejection::invalid(
                    "node_count",
                    "the last node of a pool cannot be removed; delete the pool",
                ));
            }
            let victims = self.scale_in_victims(pool_id, flavor, zone);
            if (victims.len() as u64) < u64::from(removing) {
                return Err(Rejection::invalid(
                    "node_count",
                    format!(
                        "only {} nodes can be removed; the others carry a deletion lock",
                        victims.len()
                    ),
                ));
            }
            for node_id in victims.into_iter().take(removing as usize) {
                self.node_leave_pool(context, node_id);
            }
        }
        let pool = self.pools.get_mut(&pool_id).expect("pool exists");
        pool.flavors[entry_index].node_count = node_count;
        context.emit(
            owner,
            Event::PoolScaled {
                pool: pool_id,
                flavor: flavor.to_string(),
                zone: zone.to_string(),
                from: current,
                to: node_count,
            },
        );
        Ok(None)
    }

    /// Nodes a scale-in may remove, best first: abnormal, then idle, then busy; never a
    /// locked node; ties broken by id.
    fn scale_in_victims(&self, pool_id: PoolId, flavor: &str, zone: &str) -> Vec<NodeId> {
        let mut candidates: Vec<(u8, NodeId)> = self
            .pool_nodes(pool_id)
            .filter(|node| node.flavor == flavor && node.zone == zone && !node.deletion_locked)
            .map(|node| {
                let rank = if node.status == NodeStatus::Abnormal {
                    0
                } else if node.is_idle() {
                    1
                } else {
                    2
                };
                (rank, node.id)
            })
            .collect();
        candidates.sort_unstable();
        candidates.into_iter().map(|(_, id)| id).collect()
    }

    pub(super) fn pool_delete(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        force: bool,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        let owner = pool.owner();
        let active: Vec<JobId> = self.active_jobs_in_pool(pool_id);
        if !active.is_empty() && !force {
            return Err(Rejection::in_use(
                "pool",
                pool_id,
                format!(
                    "{} active jobs; terminate them or delete with force",
                    active.len()
                ),
            ));
        }
        if let Some(locked) = self.pool_nodes(pool_id).find(|node| node.deletion_locked) {
            return Err(Rejection::in_use(
                "pool",
                pool_id,
                format!("deletion-locked node {}", locked.id),
            ));
        }
        self.remove_pool(context, pool_id, owner, &active);
        Ok(None)
    }

    /// Fail or stop every active job of the pool, give its nodes back, and forget it.
    pub(crate) fn remove_pool(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        owner: Option<TenantId>,
        active: &[JobId],
    ) {
        let from = self.pools[&pool_id].status;
        self.pools.get_mut(&pool_id).expect("pool exists").status = PoolStatus::Deleting;
        context.emit(
            owner,
            Event::PoolStatusChanged {
                pool: pool_id,
                from,
                to: PoolStatus::Deleting,
            },
        );
        for job_id in active {
            // Deleting the pool takes its nodes away; whatever still runs is released
            // with them, so each job ends at once.
            self.end_job_now(context, *job_id, "its pool was deleted");
        }
        let members: Vec<NodeId> = self.pool_nodes(pool_id).map(|node| node.id).collect();
        for node_id in members {
            self.node_leave_pool(context, node_id);
        }
        self.pools.remove(&pool_id);
        self.queues.remove(&pool_id);
        self.pool_queues.remove(&pool_id);
        if self.public_pool == Some(pool_id) {
            self.public_pool = None;
        }
        context.emit(owner, Event::PoolDeleted { pool: pool_id });
    }

    /// End a job immediately, releasing everything it holds: Terminated where the
    /// kind's table allows it from the current state, Failed otherwise.
    pub(crate) fn end_job_now(&mut self, context: &mut Context, job_id: JobId, reason: &str) {
        if self.jobs[&job_id].state.is_terminal() {
            return;
        }
        self.release_all_replicas(context, job_id);
        let job = self.job_mut(job_id);
        job.shutdown_target = None;
        let target = if corral_model::job::allowed_transition(
            &job.spec.kind,
            job.state,
            JobState::Terminated,
        ) {
            JobState::Terminated
        } else {
            JobState::Failed
        };
        self.transition(context, job_id, target, reason);
    }

    pub(crate) fn active_jobs_in_pool(&self, pool_id: PoolId) -> Vec<JobId> {
        self.jobs
            .values()
            .filter(|job| {
                job.spec.pool == pool_id
                    && !job.state.is_terminal()
                    && job.spec.kind.job_type().is_some()
            })
            .map(|job| job.id)
            .collect()
    }

    /// Switch the job types a pool accepts. Active jobs of a disabled type end: training
    /// and inference fail, notebooks stop.
    pub(super) fn pool_set_job_types(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        job_types: &BTreeSet<JobType>,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        if pool.status != PoolStatus::Running {
            return Err(Rejection::state(
                "pool",
                pool_id,
                pool.status,
                "change job types",
            ));
        }
        if job_types.is_empty() {
            return Err(Rejection::invalid(
                "job_types",
                "enable at least one job type",
            ));
        }
        if *job_types == pool.job_types {
            return Err(Rejection::invalid("job_types", "no change"));
        }
        let owner = pool.owner();
        let disabled: BTreeSet<JobType> = pool.job_types.difference(job_types).copied().collect();
        self.pools.get_mut(&pool_id).expect("pool exists").job_types = job_types.clone();
        let affected: Vec<JobId> = self
            .active_jobs_in_pool(pool_id)
            .into_iter()
            .filter(|job_id| {
                self.jobs[job_id]
                    .job_type()
                    .is_some_and(|job_type| disabled.contains(&job_type))
            })
            .collect();
        for job_id in affected {
            let job = &self.jobs[&job_id];
            if job.shutdown_target.is_some() || job.state == JobState::Stopped {
                continue;
            }
            let target = match job.job_type() {
                Some(JobType::Notebook) => JobState::Stopped,
                _ => JobState::Failed,
            };
            self.shut_down(
                context,
                job_id,
                target,
                "its job type was disabled in the pool",
            );
        }
        context.emit(owner, Event::PoolJobTypesChanged { pool: pool_id });
        Ok(None)
    }

    pub(super) fn pool_request_driver_upgrade(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        target: &DriverSpec,
        mode: UpgradeMode,
        batch_size: u32,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        if pool.is_public() {
            return Err(Rejection::invalid(
                "pool",
                "the public pool's node runtime is fixed",
            ));
        }
        if pool.status != PoolStatus::Running {
            return Err(Rejection::state(
                "pool",
                pool_id,
                pool.status,
                "upgrade drivers of",
            ));
        }
        if pool.pending_upgrade.is_some() {
            return Err(Rejection::state(
                "pool",
                pool_id,
                "Upgrading",
                "start another driver upgrade of",
            ));
        }
        if target.gpu_driver_version.is_none() && target.npu_driver_version.is_none() {
            return Err(Rejection::invalid(
                "target",
                "name a GPU or NPU driver version",
            ));
        }
        super::nodes::validate_driver("target.gpu_driver_version", &target.gpu_driver_version)?;
        super::nodes::validate_driver("target.npu_driver_version", &target.npu_driver_version)?;
        let node_count = self.pool_nodes(pool_id).count() as u32;
        if batch_size == 0 || batch_size > node_count {
            return Err(Rejection::invalid(
                "batch_size",
                format!("must be 1..={node_count} (the pool's nodes)"),
            ));
        }
        let owner = pool.owner();
        let pool = self.pools.get_mut(&pool_id).expect("pool exists");
        let previous = pool.driver.clone();
        pool.driver = DriverSpec {
            gpu_driver_version: target
                .gpu_driver_version
                .clone()
                .or(pool.driver.gpu_driver_version.clone()),
            npu_driver_version: target
                .npu_driver_version
                .clone()
                .or(pool.driver.npu_driver_version.clone()),
        };
        pool.pending_upgrade = Some(DriverUpgrade {
            target: target.clone(),
            previous,
            mode,
            batch_size,
            requested_at_ms: context.at_ms,
        });
        context.emit(owner, Event::PoolDriverUpgradeRequested { pool: pool_id });
        Ok(None)
    }

    pub(super) fn pool_cancel_driver_upgrade(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        let Some(upgrade) = pool.pending_upgrade.clone() else {
            return Err(Rejection::state(
                "pool",
                pool_id,
                "NotUpgrading",
                "cancel the driver upgrade of",
            ));
        };
        let owner = pool.owner();
        self.clear_pool_upgrades(pool_id);
        let pool = self.pools.get_mut(&pool_id).expect("pool exists");
        pool.pending_upgrade = None;
        pool.driver = upgrade.previous;
        context.emit(owner, Event::PoolDriverUpgradeCancelled { pool: pool_id });
        Ok(None)
    }

    pub(super) fn pool_renew(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        periods: u32,
    ) -> Handled {
        let pool = self.owned_pool(context.principal, pool_id)?;
        let BillingMode::Prepaid { period_months, .. } = pool.billing else {
            return Err(Rejection::invalid(
                "pool",
                "only yearly/monthly pools are renewed",
            ));
        };
        if periods == 0 || periods.saturating_mul(period_months) > MAX_PREPAID_MONTHS {
            return Err(Rejection::invalid(
                "periods",
                format!("must be at least 1 and cover at most {MAX_PREPAID_MONTHS} months"),
            ));
        }
        if !matches!(pool.status, PoolStatus::Running | PoolStatus::Frozen) {
            return Err(Rejection::state("pool", pool_id, pool.status, "renew"));
        }
        let owner = pool.owner().expect("prepaid pools are dedicated");
        let was_frozen = pool.status == PoolStatus::Frozen;
        let from_ms = pool
            .paid_until_ms
            .unwrap_or(context.at_ms)
            .max(context.at_ms);
        self.extend_prepaid(context, pool_id, owner, from_ms, periods * period_months);
        if was_frozen {
            let pool = self.pools.get_mut(&pool_id).expect("pool exists");
            pool.status = PoolStatus::Running;
            pool.frozen_at_ms = None;
            context.emit(
                Some(owner),
                Event::PoolStatusChanged {
                    pool: pool_id,
                    from: PoolStatus::Frozen,
                    to: PoolStatus::Running,
                },
            );
        }
        Ok(None)
    }

    /// Charge `months` more of a prepaid pool starting at `from_ms`.
    pub(crate) fn extend_prepaid(
        &mut self,
        context: &mut Context,
        pool_id: PoolId,
        owner: TenantId,
        from_ms: u64,
        months: u32,
    ) {
        let until = from_ms + u64::from(months) * MONTH_MS;
        let amount = self
            .pool_price_per_hour(pool_id)
            .saturating_mul(u64::from(months) * MONTH_MS / 3_600_000);
        self.charge_prepaid(context, pool_id, owner, from_ms, until, amount);
        self.pools
            .get_mut(&pool_id)
            .expect("pool exists")
            .paid_until_ms = Some(until);
    }
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), Rejection> {
    if tags.len() > MAX_TAGS_PER_POOL {
        return Err(Rejection::limit("tags per pool", MAX_TAGS_PER_POOL));
    }
    for (key, value) in tags {
        if key.is_empty() {
            return Err(Rejection::invalid("tags", "a tag key must not be empty"));
        }
        validate_text("tags.key", key, MAX_TAG_KEY_BYTES)?;
        validate_text("tags.value", value, MAX_TAG_VALUE_BYTES)?;
    }
    Ok(())
}

fn validate_billing(billing: &BillingMode) -> Result<(), Rejection> {
    if let BillingMode::Prepaid { period_months, .. } = billing {
        if *period_months == 0 || *period_months > MAX_PREPAID_MONTHS {
            return Err(Rejection::invalid(
                "billing.period_months",
                format!("must be 1..={MAX_PREPAID_MONTHS}"),
            ));
        }
    }
    Ok(())
}
