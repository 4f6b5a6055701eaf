//! A cluster builder for the scheduler's tests and benchmark: builds a `State` only
//! through real commands applied with `State::apply` (flavors, tenants, nodes,
//! networks, pools, job submissions), and applies scheduler plans the way the leader
//! proposes them (`Principal::System`).
//!
//! Time moves only when a test says so (`advance_ms`), so a plan applied right after it
//! was computed is applied at the same `now` it was planned for.

#![allow(dead_code)]

pub mod random_cluster;

use corral_model::command::{NodeRegister, PoolCreate, PoolKindRequest};
use corral_model::ids::{JobId, NetworkId, NodeId, PoolId, TenantId};
use corral_model::limits::HOUR_MS;
use corral_model::{
    BillingMode, Command, DriverSpec, Entry, Event, Flavor, JobKind, JobSpec, JobType, Placement,
    PoolFlavor, Principal, Rejection, Resources, Taint, Toleration,
};
use corral_scheduler::{plan_round, Plan, RoundOptions};
use corral_state::{Applied, State};
use std::collections::BTreeMap;

pub const ACCELERATOR_TYPE: &str = "nvidia-a100";
pub const ZONE: &str = "zone-a";
pub const START_MS: u64 = 1_000_000;

/// One accelerator's worth of the other resources; a node of `n` accelerators offers
/// `n` of these, so accelerators are what runs out first.
pub fn per_accelerator(accelerators: u32) -> Resources {
    let count = u64::from(accelerators.max(1));
    Resources {
        cpu_millicores: 8_000 * count,
        memory_mib: 64 * 1024 * count,
        accelerators,
        disk_gib: 100 * count,
        bandwidth_mbps: 1_000 * count,
    }
}

/// A quota large enough never to matter, with `accelerators` accelerators.
pub fn quota_with_accelerators(accelerators: u32) -> Resources {
    Resources {
        cpu_millicores: u64::MAX / 4,
        memory_mib: u64::MAX / 4,
        accelerators,
        disk_gib: u64::MAX / 4,
        bandwidth_mbps: u64::MAX / 4,
    }
}

#[derive(Clone)]
pub struct Cluster {
    pub state: State,
    index: u64,
    at_ms: u64,
    networks_created: u32,
    nodes_registered: u32,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            state: State::new(),
            index: 0,
            at_ms: START_MS,
            networks_created: 0,
            nodes_registered: 0,
        }
    }

    /// Apply one command at the current time.
    pub fn apply(&mut self, principal: Principal, command: Command) -> Result<Applied, Rejection> {
        self.index += 1;
        let entry = Entry {
            index: self.index,
            at_ms: self.at_ms,
            principal,
            command,
        };
        self.state.apply(&entry)
    }

    /// Apply a setup command that must succeed.
    pub fn must(&mut self, principal: Principal, command: Command) -> Applied {
        let name = command.name();
        self.apply(principal, command)
            .unwrap_or_else(|rejection| panic!("{name} was rejected: {rejection}"))
    }

    pub fn advance_ms(&mut self, milliseconds: u64) {
        self.at_ms += milliseconds;
        self.must(Principal::System, Command::MeterTick);
    }

    pub fn now_ms(&self) -> u64 {
        self.state.now_ms()
    }

    /// A flavor named `gpu-<n>` with `n` accelerators.
    pub fn define_flavor(&mut self, accelerators: u32) -> String {
        let name = format!("gpu-{accelerators}");
        self.must(
            Principal::PlatformAdmin,
            Command::FlavorDefine(Flavor {
                name: name.clone(),
                capacity: per_accelerator(accelerators),
                accelerator_type: Some(ACCELERATOR_TYPE.into()),
                cpu_architecture: "x86_64".into(),
                price_micros_per_hour: 8_000_000,
            }),
        );
        name
    }

    pub fn tenant(&mut self, name: &str, quota_accelerators: u32) -> TenantId {
        let applied = self.must(
            Principal::PlatformAdmin,
            Command::TenantCreate {
                name: name.into(),
                quota: quota_with_accelerators(quota_accelerators),
                may_use_high_priority: true,
            },
        );
        match applied.created {
            Some(corral_state::Created::Tenant(tenant)) => tenant,
            other => panic!("tenant create returned {other:?}"),
        }
    }

    /// Register `count` nodes of `flavor` as their agents would.
    pub fn register_nodes(
        &mut self,
        flavor: &str,
        count: u32,
        labels: &BTreeMap<String, String>,
        taints: &[Taint],
    ) -> Vec<NodeId> {
        (0..count)
            .map(|_| {
                self.nodes_registered += 1;
                let name = format!("host-{}", self.nodes_registered);
                let applied = self.must(
                    Principal::Agent,
                    Command::NodeRegister(NodeRegister {
                        name,
                        flavor: flavor.into(),
                        zone: ZONE.into(),
                        labels: labels.clone(),
                        taints: taints.to_vec(),
                        gpu_driver_version: None,
                        npu_driver_version: None,
                        agent_address: None,
                    }),
                );
                match applied.created {
                    Some(corral_state::Created::Node(node)) => node,
                    other => panic!("node register returned {other:?}"),
                }
            })
            .collect()
    }

    fn pool_create(&mut self, principal: Principal, request: PoolCreate) -> PoolId {
        match self.must(principal, Command::PoolCreate(request)).created {
            Some(corral_state::Created::Pool(pool)) => pool,
            other => panic!("pool create returned {other:?}"),
        }
    }

    fn pool_request(
        name: &str,
        kind: PoolKindRequest,
        network: Option<NetworkId>,
        flavors: &[(&str, u32)],
    ) -> PoolCreate {
        PoolCreate {
            name: name.into(),
            description: String::new(),
            kind,
            flavors: flavors
                .iter()
                .map(|(flavor, node_count)| PoolFlavor {
                    flavor: (*flavor).into(),
                    zone: ZONE.into(),
                    node_count: *node_count,
                })
                .collect(),
            job_types: [JobType::Training, JobType::Inference, JobType::Notebook]
                .into_iter()
                .collect(),
            network,
            driver: DriverSpec::default(),
            billing: BillingMode::PayPerUse,
            tags: BTreeMap::new(),
        }
    }

    /// The public pool, claiming free registered nodes: `(flavor, node_count)`.
    pub fn public_pool(&mut self, flavors: &[(&str, u32)]) -> PoolId {
        let request = Cluster::pool_request("public", PoolKindRequest::Public, None, flavors);
        self.pool_create(Principal::PlatformAdmin, request)
    }

    /// A dedicated pool of `owner`, with a fresh network of the owner, created by the
    /// owner's user.
    pub fn dedicated_pool(
        &mut self,
        name: &str,
        owner: TenantId,
        flavors: &[(&str, u32)],
    ) -> PoolId {
        self.networks_created += 1;
        let applied = self.must(
            Principal::TenantUser(owner),
            Command::NetworkCreate {
                tenant: owner,
                name: format!("net-{}", self.networks_created),
                cidr: format!("172.{}.0.0/16", 15 + self.networks_created),
            },
        );
        let Some(corral_state::Created::Network(network)) = applied.created else {
            panic!("network create returned {:?}", applied.created);
        };
        let request = Cluster::pool_request(
            name,
            PoolKindRequest::Dedicated { owner },
            Some(network),
            flavors,
        );
        self.pool_create(Principal::TenantUser(owner), request)
    }

    pub fn submit(&mut self, tenant: TenantId, spec: JobSpec) -> JobId {
        match self
            .must(Principal::TenantUser(tenant), Command::JobSubmit(spec))
            .created
        {
            Some(corral_state::Created::Job(job)) => job,
            other => panic!("job submit returned {other:?}"),
        }
    }

    /// Propose a plan as the leader's scheduler loop does, at the current time.
    pub fn apply_placements(
        &mut self,
        pool: PoolId,
        placements: Vec<Placement>,
    ) -> Result<Applied, Rejection> {
        self.apply(
            Principal::System,
            Command::SchedulerPlan { pool, placements },
        )
    }

    pub fn apply_plan(&mut self, plan: &Plan) -> Applied {
        self.apply_placements(plan.pool, plan.placements.clone())
            .unwrap_or_else(|rejection| panic!("plan was rejected as a whole: {rejection}"))
    }

    /// Plan one round for `pool` and apply it; returns the plan and what apply did.
    pub fn run_round(&mut self, pool: PoolId) -> (Plan, Applied) {
        let plan = plan_round(&self.state, pool, &RoundOptions::default());
        let applied = self.apply_plan(&plan);
        (plan, applied)
    }

    /// Report every placed replica of every job as started, as agents do.
    pub fn start_all_replicas(&mut self) {
        let placed: Vec<(JobId, u32, NodeId)> = self
            .state
            .jobs()
            .flat_map(|job| {
                job.replicas
                    .iter()
                    .filter(|replica| replica.state == corral_model::ReplicaState::Assigned)
                    .map(move |replica| (job.id, replica.rank, replica.node.expect("assigned")))
            })
            .collect();
        for (job, rank, node) in placed {
            self.must(
                Principal::Agent,
                Command::ReplicaStarted { job, rank, node },
            );
        }
    }

    pub fn assert_invariants(&self) {
        if let Err(violation) = self.state.check_invariants() {
            panic!("{violation}");
        }
    }
}

/// Jobs whose placement was rejected by the plan applier.
pub fn rejected_jobs(applied: &Applied) -> Vec<JobId> {
    applied
        .events
        .iter()
        .filter_map(|record| match &record.event {
            Event::PlacementRejected { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

fn spec(pool: PoolId, kind: JobKind, replicas: u32, accelerators: u32) -> JobSpec {
    JobSpec {
        name: "job".into(),
        pool,
        kind,
        replicas,
        per_replica: per_accelerator(accelerators),
        accelerator_type: (accelerators > 0).then(|| ACCELERATOR_TYPE.to_string()),
        priority: 1,
        command: vec!["python".into(), "main.py".into()],
        environment: BTreeMap::new(),
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
        max_runtime_ms: None,
    }
}

/// A training gang of `replicas` replicas with `accelerators` each.
pub fn training(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    spec(
        pool,
        JobKind::Training { retry_limit: 1 },
        replicas,
        accelerators,
    )
}

/// A training gang that the state machine fails after `hours` of running.
pub fn training_for_hours(pool: PoolId, replicas: u32, accelerators: u32, hours: u64) -> JobSpec {
    let mut job = training(pool, replicas, accelerators);
    job.max_runtime_ms = Some(hours * HOUR_MS);
    job
}

pub fn inference(pool: PoolId, replicas: u32, accelerators: u32) -> JobSpec {
    spec(pool, JobKind::Inference, replicas, accelerators)
}

pub fn notebook(pool: PoolId, accelerators: u32) -> JobSpec {
    spec(
        pool,
        JobKind::Notebook {
            auto_stop_after_ms: None,
        },
        1,
        accelerators,
    )
}

pub fn with_priority(mut job: JobSpec, priority: u8) -> JobSpec {
    job.priority = priority;
    job
}

pub fn tolerating(mut job: JobSpec, key: &str) -> JobSpec {
    job.tolerations.push(Toleration {
        key: key.into(),
        value: None,
    });
    job
}

pub fn selecting(mut job: JobSpec, key: &str, value: &str) -> JobSpec {
    job.node_selector.insert(key.into(), value.into());
    job
}

/// Give the job a runtime limit the state machine enforces: max runtime for training,
/// auto-stop for notebooks; inference services keep running (the limit is ignored).
pub fn with_runtime_hours(mut job: JobSpec, hours: u64) -> JobSpec {
    match &mut job.kind {
        JobKind::Notebook { auto_stop_after_ms } => *auto_stop_after_ms = Some(hours * HOUR_MS),
        _ => job.max_runtime_ms = Some(hours * HOUR_MS),
    }
    job
}

/// Dominant share (ppm of the pool's capacity) of each tenant's work in `pool`.
pub fn dominant_shares(state: &State, pool: PoolId) -> BTreeMap<TenantId, u64> {
    let mut capacity = Resources::ZERO;
    let mut held: BTreeMap<TenantId, Resources> = BTreeMap::new();
    for node in state.pool_nodes(pool) {
        capacity = capacity.saturating_add(&node.capacity);
        for allocation in &node.allocations {
            let tenant = state
                .job(allocation.job)
                .expect("allocated job exists")
                .tenant;
            let total = held.entry(tenant).or_default();
            *total = total.saturating_add(&allocation.resources);
        }
    }
    held.into_iter()
        .map(|(tenant, resources)| (tenant, resources.dominant_share_ppm(&capacity)))
        .collect()
}
